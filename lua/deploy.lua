--[[
  deploy: creates a whole job tree and raises the jobsheet flag on every cluster, pre-order.

  Preconditions: no job of this name exists; the dataset share and test-split blobs are stored.
  KEYS[1] job        the root cluster hash            hierfl:{ROOT}:job:ROOT
  ARGV[1] root       the root job name
  ARGV[2] tree       JSON list of cluster specs in pre-order: {name, parent, level, children,
                     clients, workers, cluster_epochs, tolerance: {round_timeout_ms,
                     min_clients, aggregation_timeout_ms, quorum}}
  ARGV[3] sheet      the job sheet (canonical JSON)
  ARGV[4] rounds     global rounds
  ARGV[5] shares     JSON {cluster: {client id: share digest}}
  ARGV[6] testset    digest of the test split blob
  ARGV[7] keep_checkpoints  "1" keeps every round's global blob, "0" only the live ones
  ARGV[8] evaluate_every    a root worker scores every k-th round and the last (0: the last)
  Returns: the number of clusters created
  Errors: JOB_EXISTS, BAD_ARGUMENT, MISSING_BLOB
  Writes: job, clients, workers, shares hashes of every cluster; free lists; sheet; testset;
          events
]]
--- @include "lib/util"
--- @include "lib/event"

local function is_null(v) return v == nil or v == cjson.null end

local function tolerance_of(spec)
  local t = is_null(spec.tolerance) and {} or spec.tolerance
  return as_int(t.round_timeout_ms, 0), as_int(t.min_clients, 0),
    as_int(t.aggregation_timeout_ms, 0), as_int(t.quorum, 0)
end

local function decode(text, what, root)
  local ok, value = pcall(cjson.decode, text)
  if not ok or type(value) ~= "table" then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. ": " .. what .. " is not valid JSON")
  end
  return value
end

local function validate(root, tree, shares)
  if #tree == 0 or tree[1].name ~= root or not is_null(tree[1].parent) then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. ": the tree must start with the root cluster")
  end
  for _, spec in ipairs(tree) do
    if type(spec.name) ~= "string" or root_of(spec.name) ~= root then
      refuse(ERR.BAD_ARGUMENT, "job=" .. root .. ": cluster " .. tostring(spec.name)
        .. " does not belong to this job")
    end
    if #spec.workers == 0 or (#spec.clients + #spec.children) == 0 then
      refuse(ERR.BAD_ARGUMENT, "job=" .. root .. " cluster=" .. spec.name
        .. ": needs at least one worker and one client or sub-cluster")
    end
    local _, _, _, quorum = tolerance_of(spec)
    if quorum > #spec.workers then
      refuse(ERR.BAD_ARGUMENT, "job=" .. root .. " cluster=" .. spec.name .. ": quorum "
        .. quorum .. " exceeds its " .. #spec.workers .. " workers")
    end
  end
  for cluster, by_client in pairs(shares) do
    for client, digest in pairs(by_client) do
      if redis.call("EXISTS", KEY.blob(root, digest)) == 0 then
        refuse(ERR.MISSING_BLOB, "job=" .. root .. " cluster=" .. cluster .. " client=" .. client
          .. ": dataset share " .. digest .. " is not stored")
      end
    end
  end
end

local function create_cluster(root, spec, rounds, now)
  local name = spec.name
  local round_timeout, min_clients, aggregation_timeout, quorum = tolerance_of(spec)
  redis.call("HSET", KEY.job(root, name),
    F.NAME, name, F.ROOT, root, F.PARENT, is_null(spec.parent) and "" or spec.parent,
    F.LEVEL, spec.level, F.CHILDREN, table.concat(spec.children, ","),
    F.N_CLIENTS, #spec.clients + #spec.children, F.N_WORKERS, #spec.workers,
    F.JOBSHEET_FLAG, FLAG.UP, F.DATASET_FLAG, FLAG.DOWN,
    F.PROCESS_STAGE, STAGE.IDLE, F.GENERATION, 0, F.ROUND, 0, F.ROUNDS, rounds,
    F.EPOCH, 0, F.CLUSTER_EPOCHS, spec.cluster_epochs, F.GLOBAL, "", F.SAMPLES, 0,
    F.ROUND_TIMEOUT, round_timeout, F.MIN_CLIENTS, min_clients,
    F.AGGREGATION_TIMEOUT, aggregation_timeout, F.QUORUM, quorum, F.DEADLINE, "",
    F.ATTEMPT, 0, F.PARENT_GEN, 0, F.DROPPED, "", F.FAILURE, "",
    F.CREATED_AT, now)
  redis.call("HSET", KEY.stages(root, name), F.CLIENT_STAGE, STATUS.DEPLOYED,
    F.WORKER_STAGE, STATUS.DEPLOYED, F.UPDATED_AT, now)
  for _, child in ipairs(spec.children) do
    redis.call("HSET", KEY.clients(root, name), child, STATUS.DEPLOYED)
  end
  for _, client in ipairs(spec.clients) do
    redis.call("HSET", KEY.clients(root, name), client, STATUS.DEPLOYED)
    redis.call("RPUSH", KEY.free(root, "client"), name .. "/" .. client)
  end
  for _, worker in ipairs(spec.workers) do
    redis.call("HSET", KEY.workers(root, name), worker, STATUS.DEPLOYED)
    redis.call("RPUSH", KEY.free(root, "worker"), name .. "/" .. worker)
  end
end

local function main()
  local root = ARGV[1]
  if redis.call("EXISTS", KEYS[1]) == 1 then
    refuse(ERR.JOB_EXISTS, "job=" .. root .. ": a job of this name exists already "
      .. "(hierfl delete " .. root .. " removes it)")
  end
  local tree = decode(ARGV[2], "the tree", root)
  local shares = decode(ARGV[5], "the shares", root)
  local rounds = tonumber(ARGV[4])
  if not rounds or rounds < 1 then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. ": rounds must be a positive integer")
  end
  -- Absent (a caller older than the option): every round is scored, as before it existed.
  local evaluate_every = tonumber(ARGV[8] or "1")
  if not evaluate_every or evaluate_every < 0 or evaluate_every % 1 ~= 0 then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. ": evaluate_every must be an integer >= 0")
  end
  validate(root, tree, shares)
  local now = now_ms()
  for _, spec in ipairs(tree) do create_cluster(root, spec, rounds, now) end
  for cluster, by_client in pairs(shares) do
    for client, digest in pairs(by_client) do
      redis.call("HSET", KEY.shares(root, cluster), client, digest)
    end
  end
  redis.call("SET", KEY.sheet(root), ARGV[3])
  redis.call("SET", KEY.testset(root), ARGV[6])
  redis.call("HSET", KEY.job(root, root), F.OUTCOME, OUTCOME.RUNNING, F.REASON, "",
    F.KEEP_CHECKPOINTS, ARGV[7] == "1" and 1 or 0, F.EVALUATE_EVERY, evaluate_every)
  emit(root, root, nil, "deploy", "", "", { "clusters", #tree })
  return #tree
end

return run(main)
