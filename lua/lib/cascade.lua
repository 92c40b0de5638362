--[[
  The cascade: stages, bubbling up the tree and setting flags top-down, all inside the calling
  script so that one transition and all of its consequences are one atomic step.

  stage      = the lowest status of a cluster's clients (or workers)
  bubbling   = a sub-cluster is one client of its parent; its status there follows its stages
               (1 and 2 when both stages reach them, 5 when everyone exited), turns BUSY when the
               parent starts a generation and DONE when its last cluster epoch is agreed.
  top-down   = the dataset flag, each new generation and the end of the job go from the root down.
]]
--- @include "lib/util"
--- @include "lib/event"

local function children_of(root, cluster)
  return split_csv(redis.call("HGET", KEY.job(root, cluster), F.CHILDREN))
end

local function lowest_status(key)
  local lowest = STATUS.EXITED
  for _, v in ipairs(redis.call("HVALS", key)) do
    local s = tonumber(v)
    if s < lowest then lowest = s end
  end
  return lowest
end

local function recompute_stages(root, cluster)
  local cs = lowest_status(KEY.clients(root, cluster))
  local ws = lowest_status(KEY.workers(root, cluster))
  redis.call("HSET", KEY.job(root, cluster), F.CLIENT_STAGE, cs, F.WORKER_STAGE, ws,
    F.UPDATED_AT, now_ms())
  return cs, ws
end

-- Applies `fn(cluster)` to a cluster and all clusters below it, pre-order.
local function each_below(root, cluster, fn)
  fn(cluster)
  for _, child in ipairs(children_of(root, cluster)) do each_below(root, child, fn) end
end

local function set_status_in_parent(root, cluster, parent, status)
  local from = redis.call("HGET", KEY.clients(root, parent), cluster)
  redis.call("HSET", KEY.clients(root, parent), cluster, status)
  emit(root, parent, "cluster/" .. cluster, "cascade", from, status)
end

-- A new generation in `cluster` and every cluster below it, with `digest` as their global.
local function begin_generation(root, cluster, digest)
  local job = KEY.job(root, cluster)
  local round = hget_int(KEY.job(root, root), F.ROUND)
  redis.call("HSET", job, F.GLOBAL, digest, F.PROCESS_STAGE, STAGE.TRAINING, F.ROUND, round)
  redis.call("HINCRBY", job, F.GENERATION, 1)
  redis.call("DEL", KEY.submissions(root, cluster), KEY.samples(root, cluster),
    KEY.aggregates(root, cluster))
  for _, child in ipairs(children_of(root, cluster)) do
    redis.call("HSET", KEY.job(root, child), F.EPOCH, 0)
    set_status_in_parent(root, child, cluster, STATUS.BUSY)
    begin_generation(root, child, digest)
  end
  recompute_stages(root, cluster)
  emit(root, cluster, nil, "generation", "", "", { "global", digest })
end

local function finish_tree(root, outcome, reason, digest)
  redis.call("HSET", KEY.job(root, root), F.OUTCOME, outcome, F.REASON, reason or "")
  each_below(root, root, function(cluster)
    redis.call("HSET", KEY.job(root, cluster), F.PROCESS_STAGE, STAGE.FINISHED)
    if digest then redis.call("HSET", KEY.job(root, cluster), F.GLOBAL, digest) end
  end)
  emit(root, root, nil, outcome, "", "", { "reason", reason or "" })
end

local function start_first_round(root)
  local job = KEY.job(root, root)
  local candidate = redis.call("HGET", job, F.CANDIDATE)
  redis.call("HSET", job, F.ROUND, 1)
  redis.call("HSET", KEY.history(root), 0, candidate)
  begin_generation(root, root, candidate)
end

-- Recomputes a cluster's stages and carries the consequences up the tree (and, at the root,
-- down again: the dataset flag, the first round, the end of the job).
local function settle(root, cluster)
  local cs, ws = recompute_stages(root, cluster)
  local job = KEY.job(root, cluster)
  local parent = redis.call("HGET", job, F.PARENT)
  local both = (cs == ws) and cs or nil
  if parent and parent ~= "" then
    if both == STATUS.JOBSHEET_ACKED or both == STATUS.DATASET_ACKED or both == STATUS.EXITED then
      local current = tonumber(redis.call("HGET", KEY.clients(root, parent), cluster))
      if current < both then
        set_status_in_parent(root, cluster, parent, both)
        settle(root, parent)
      end
    end
    return
  end
  if both == STATUS.JOBSHEET_ACKED and hget_int(job, F.DATASET_FLAG) == FLAG.DOWN then
    each_below(root, root, function(c)
      redis.call("HSET", KEY.job(root, c), F.DATASET_FLAG, FLAG.UP)
    end)
    emit(root, root, nil, "dataset_flag", FLAG.DOWN, FLAG.UP)
  elseif both == STATUS.DATASET_ACKED and hget_int(job, F.ROUND) == 0 then
    start_first_round(root)
  elseif both == STATUS.EXITED then
    emit(root, root, nil, "exited", "", "")
  end
end

-- Records a member's parameters for this generation; when every member has submitted, the
-- cluster moves on to aggregation.
local function record_submission(root, cluster, member, digest, samples)
  redis.call("HSET", KEY.submissions(root, cluster), member, digest)
  redis.call("HSET", KEY.samples(root, cluster), member, samples)
  local members = redis.call("HLEN", KEY.clients(root, cluster))
  if redis.call("HLEN", KEY.submissions(root, cluster)) == members then
    redis.call("HSET", KEY.job(root, cluster), F.PROCESS_STAGE, STAGE.AGGREGATING)
    emit(root, cluster, nil, "aggregation", STAGE.TRAINING, STAGE.AGGREGATING)
  end
end

-- The digest that a strict majority of the cluster's workers uploaded, or nil.
local function majority(root, cluster)
  local counts, order = {}, {}
  local uploads = redis.call("HGETALL", KEY.aggregates(root, cluster))
  for i = 2, #uploads, 2 do
    local d = uploads[i]
    if not counts[d] then order[#order + 1] = d; counts[d] = 0 end
    counts[d] = counts[d] + 1
  end
  local workers = redis.call("HLEN", KEY.workers(root, cluster))
  for _, d in ipairs(order) do
    if counts[d] * 2 > workers then return d, counts[d], workers end
  end
  return nil, 0, workers
end

local function total_samples(root, cluster)
  local total = 0
  for _, v in ipairs(redis.call("HVALS", KEY.samples(root, cluster))) do
    total = total + tonumber(v)
  end
  return total
end

-- Called when every worker of `cluster` has uploaded: consensus, then the round decision.
local function conclude(root, cluster)
  local winner, votes, workers = majority(root, cluster)
  if not winner then
    finish_tree(root, OUTCOME.FAILED, "no majority among the " .. workers
      .. " aggregates of cluster " .. cluster)
    return
  end
  local job = KEY.job(root, cluster)
  local epoch = redis.call("HINCRBY", job, F.EPOCH, 1)
  local samples = total_samples(root, cluster)
  redis.call("HSET", job, F.SAMPLES, samples)
  emit(root, cluster, nil, "consensus", "", "", { "digest", winner, "votes", votes })
  local parent = redis.call("HGET", job, F.PARENT)
  if parent == "" then
    local round = hget_int(job, F.ROUND)
    redis.call("HSET", KEY.history(root), round, winner)
    if round >= hget_int(job, F.ROUNDS) then
      finish_tree(root, OUTCOME.COMPLETED, "", winner)
    else
      redis.call("HSET", job, F.ROUND, round + 1)
      begin_generation(root, root, winner)
    end
  elseif epoch < hget_int(job, F.CLUSTER_EPOCHS) then
    begin_generation(root, cluster, winner)
  else
    redis.call("HSET", job, F.GLOBAL, winner, F.PROCESS_STAGE, STAGE.IDLE)
    set_status_in_parent(root, cluster, parent, STATUS.DONE)
    recompute_stages(root, parent)
    record_submission(root, parent, cluster, winner, samples)
  end
end

-- Sets a node's new status (after its checks passed) and records the event.
local function move_node(ctx, name, extra)
  local dest = TRANSITIONS[name].dest
  redis.call("HSET", member_key(ctx.root, ctx.cluster, ctx.role), ctx.node, dest)
  emit(ctx.root, ctx.cluster, ctx.role .. "/" .. ctx.node, name, ctx.status, dest, extra)
  return dest
end
