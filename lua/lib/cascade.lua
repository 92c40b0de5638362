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
--- @include "lib/retire"

local function lowest_status(key)
  local lowest = STATUS.EXITED
  for _, v in ipairs(redis.call("HVALS", key)) do
    local s = tonumber(v)
    if s < lowest then lowest = s end
  end
  return lowest
end

-- The stages live in their own hash, not in the cluster hash the members wait on: a stage
-- moves with almost every member's step (a client that starts training while the others have
-- submitted takes client_stage from DONE to BUSY and back), and no member acts on it.
--
-- `move` ({role, from, to}: the one member this call moved, if the caller knows) spares the
-- scan of the members in most calls: a stage is the lowest status, so a member moving to or
-- below it sets it, and one moving up from above it leaves it. Only the member that leaves
-- the lowest status makes the others be read (a 100-client cluster: 100 reads a round, not
-- 40,000).
local function stage_after(key, stage, move, role)
  if stage and move then
    if move.role ~= role then return stage end
    if move.to <= stage then return move.to end
    if move.from ~= stage then return stage end
  end
  return lowest_status(key)
end

local function recompute_stages(root, cluster, move)
  local stages = KEY.stages(root, cluster)
  local old = redis.call("HMGET", stages, F.CLIENT_STAGE, F.WORKER_STAGE)
  local cs = stage_after(KEY.clients(root, cluster), tonumber(old[1]), move, "client")
  local ws = stage_after(KEY.workers(root, cluster), tonumber(old[2]), move, "worker")
  if tonumber(old[1]) ~= cs or tonumber(old[2]) ~= ws then
    redis.call("HSET", stages, F.CLIENT_STAGE, cs, F.WORKER_STAGE, ws, F.UPDATED_AT, now_ms())
  end
  return cs, ws
end

local function set_status_in_parent(root, cluster, parent, status)
  local from = redis.call("HGET", KEY.clients(root, parent), cluster)
  redis.call("HSET", KEY.clients(root, parent), cluster, status)
  emit(root, parent, "cluster/" .. cluster, "cascade", from, status)
end

-- The server time `timeout_field` ms from now, or "" when that timeout is 0 (wait forever).
local function deadline_after(job, timeout_field)
  local timeout = hget_int(job, timeout_field)
  if timeout <= 0 then return "" end
  return now_ms() + timeout
end

-- A new generation in `cluster` and every cluster below it, with `digest` as their global.
local function begin_generation(root, cluster, digest)
  local job = KEY.job(root, cluster)
  local round = hget_int(KEY.job(root, root), F.ROUND)
  retire(redis.call("HGET", job, F.GLOBAL))
  retire_values(KEY.submissions(root, cluster))
  retire_values(KEY.aggregates(root, cluster))
  redis.call("HSET", job, F.GLOBAL, digest, F.PROCESS_STAGE, STAGE.TRAINING, F.ROUND, round,
    F.DEADLINE, deadline_after(job, F.ROUND_TIMEOUT), F.ATTEMPT, 0, F.DROPPED, "",
    F.FAILURE, "")
  local generation = redis.call("HINCRBY", job, F.GENERATION, 1)
  redis.call("DEL", KEY.submissions(root, cluster), KEY.samples(root, cluster),
    KEY.aggregates(root, cluster), KEY.excluded(root, cluster))
  for _, child in ipairs(children_of(root, cluster)) do
    redis.call("HSET", KEY.job(root, child), F.EPOCH, 0, F.PARENT_GEN, generation)
    set_status_in_parent(root, child, cluster, STATUS.BUSY)
    begin_generation(root, child, digest)
  end
  recompute_stages(root, cluster)
  emit(root, cluster, nil, "generation", "", "", { "global", digest })
end

local function finish_tree(root, outcome, reason, digest)
  redis.call("HSET", KEY.job(root, root), F.OUTCOME, outcome, F.REASON, reason or "")
  each_below(root, root, function(cluster)
    redis.call("HSET", KEY.job(root, cluster), F.PROCESS_STAGE, STAGE.FINISHED, F.DEADLINE, "")
    if digest then
      retire(redis.call("HGET", KEY.job(root, cluster), F.GLOBAL))
      redis.call("HSET", KEY.job(root, cluster), F.GLOBAL, digest)
    end
  end)
  emit(root, root, nil, outcome, "", "", { "reason", reason or "" })
end

local function start_first_round(root)
  local job = KEY.job(root, root)
  local candidate = redis.call("HGET", job, F.CANDIDATE)
  redis.call("HSET", job, F.ROUND, 1)
  record_global(root, 0, candidate)
  begin_generation(root, root, candidate)
end

-- Recomputes a cluster's stages and carries the consequences up the tree (and, at the root,
-- down again: the dataset flag, the first round, the end of the job).
local function settle(root, cluster, move)
  local cs, ws = recompute_stages(root, cluster, move)
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

local function start_aggregating(root, cluster)
  local job = KEY.job(root, cluster)
  redis.call("HSET", job, F.PROCESS_STAGE, STAGE.AGGREGATING,
    F.DEADLINE, deadline_after(job, F.AGGREGATION_TIMEOUT))
  emit(root, cluster, nil, "aggregation", STAGE.TRAINING, STAGE.AGGREGATING)
end

local close_phase -- the cascade's closing and failing call each other
-- How a round closed because only failed sub-clusters were missing ends a failure's reason.
local EARLY = "before the deadline, the others having failed"

-- Whether every member of `cluster` yet to submit in its current generation is a sub-cluster
-- that failed in it: a failed sub-cluster rejoins only at its parent's next generation, so
-- nothing more can come before the deadline.
local function only_failed_missing(root, cluster)
  local children = children_of(root, cluster)
  if #children == 0 then return false end -- a leaf cluster's (every submission's) quick answer
  local job = KEY.job(root, cluster)
  if hget_int(job, F.PROCESS_STAGE) ~= STAGE.TRAINING then return false end
  local generation = hget_int(job, F.GENERATION)
  local failed = 0
  for _, child in ipairs(children) do
    local child_job = KEY.job(root, child)
    local failure = redis.call("HGET", child_job, F.FAILURE)
    if failure and failure ~= "" and hget_int(child_job, F.PARENT_GEN) == generation then
      failed = failed + 1
    end
  end
  return failed > 0 and redis.call("HLEN", KEY.submissions(root, cluster)) + failed
    == redis.call("HLEN", KEY.clients(root, cluster))
end

-- Records a member's parameters for this generation; when every member has submitted, the
-- cluster moves on to aggregation, and when all the others failed, it closes the round.
local function record_submission(root, cluster, member, digest, samples)
  redis.call("HSET", KEY.submissions(root, cluster), member, digest)
  redis.call("HSET", KEY.samples(root, cluster), member, samples)
  local members = redis.call("HLEN", KEY.clients(root, cluster))
  if redis.call("HLEN", KEY.submissions(root, cluster)) == members then
    start_aggregating(root, cluster)
  elseif only_failed_missing(root, cluster) then
    close_phase(root, cluster, EARLY)
  end
end

-- The digest that enough of the cluster's workers uploaded (its quorum, by default a strict
-- majority of all its workers), with its votes and the votes needed; nil when none has them.
local function majority(root, cluster)
  local counts, order = {}, {}
  local uploads = redis.call("HGETALL", KEY.aggregates(root, cluster))
  for i = 2, #uploads, 2 do
    local d = uploads[i]
    if not counts[d] then order[#order + 1] = d; counts[d] = 0 end
    counts[d] = counts[d] + 1
  end
  local needed = hget_int(KEY.job(root, cluster), F.QUORUM)
  if needed <= 0 then
    needed = math.floor(redis.call("HLEN", KEY.workers(root, cluster)) / 2) + 1
  end
  -- The most votes wins; a tie (possible with a small quorum) goes to the smaller digest.
  local best = nil
  for _, d in ipairs(order) do
    if counts[d] >= needed and (not best or counts[d] > counts[best]
        or (counts[d] == counts[best] and d < best)) then
      best = d
    end
  end
  if best then return best, counts[best], needed end
  return nil, 0, needed
end

-- Workers whose upload differs from the winner, or who did not upload (comma-separated).
local function dissenters(root, cluster, winner)
  local out = {}
  local workers = redis.call("HKEYS", KEY.workers(root, cluster))
  table.sort(workers)
  for _, w in ipairs(workers) do
    if redis.call("HGET", KEY.aggregates(root, cluster), w) ~= winner then out[#out + 1] = w end
  end
  return table.concat(out, ",")
end

local function total_samples(root, cluster)
  local total = 0
  for _, v in ipairs(redis.call("HVALS", KEY.samples(root, cluster))) do
    total = total + tonumber(v)
  end
  return total
end

-- A sub-cluster that cannot deliver this round. The root failing ends the job; a sub-cluster's
-- parent goes on without it at its own deadline, or at once when every other member has
-- submitted or failed; without a deadline the job cannot go on.
local function fail_cluster(root, cluster, reason)
  local job = KEY.job(root, cluster)
  local parent = redis.call("HGET", job, F.PARENT)
  if parent == "" then
    finish_tree(root, OUTCOME.FAILED, reason)
    return
  end
  redis.call("HSET", job, F.PROCESS_STAGE, STAGE.IDLE, F.DEADLINE, "", F.FAILURE, reason)
  emit(root, cluster, nil, "cluster_failed", "", "", { "reason", reason })
  if hget_int(KEY.job(root, parent), F.ROUND_TIMEOUT) <= 0 then
    finish_tree(root, OUTCOME.FAILED, "cluster " .. cluster .. " failed (" .. reason
      .. ") and cluster " .. parent .. " has no round_timeout to go on without it")
  elseif only_failed_missing(root, parent) then
    close_phase(root, parent, EARLY)
  end
end

-- The agreed digest moves the tree on: the next round, the next cluster epoch, the parent's
-- submission, or the end of the job.
local function apply_winner(root, cluster, winner)
  local job = KEY.job(root, cluster)
  local epoch = redis.call("HINCRBY", job, F.EPOCH, 1)
  local samples = total_samples(root, cluster)
  redis.call("HSET", job, F.SAMPLES, samples)
  local parent = redis.call("HGET", job, F.PARENT)
  if parent == "" then
    local round = hget_int(job, F.ROUND)
    record_global(root, round, winner)
    if round >= hget_int(job, F.ROUNDS) then
      finish_tree(root, OUTCOME.COMPLETED, "", winner)
    else
      redis.call("HSET", job, F.ROUND, round + 1)
      begin_generation(root, root, winner)
    end
  elseif epoch < hget_int(job, F.CLUSTER_EPOCHS) then
    begin_generation(root, cluster, winner)
  else
    retire(redis.call("HGET", job, F.GLOBAL))
    redis.call("HSET", job, F.GLOBAL, winner, F.PROCESS_STAGE, STAGE.IDLE, F.DEADLINE, "")
    local parent_job = KEY.job(root, parent)
    if hget_int(parent_job, F.PROCESS_STAGE) ~= STAGE.TRAINING
        or hget_int(parent_job, F.GENERATION) ~= hget_int(job, F.PARENT_GEN) then
      emit(root, cluster, nil, "late", "", "", { "parent_gen", hget_int(job, F.PARENT_GEN) })
      return
    end
    set_status_in_parent(root, cluster, parent, STATUS.DONE)
    recompute_stages(root, parent)
    record_submission(root, parent, cluster, winner, samples)
  end
end

-- Consensus over the uploaded aggregates: when every worker has uploaded, or at the
-- aggregation deadline. No winner: aggregation runs once more, then the cluster fails.
local function decide(root, cluster, at_deadline)
  local job = KEY.job(root, cluster)
  local winner, votes, needed = majority(root, cluster)
  if not winner then
    if at_deadline or hget_int(job, F.ATTEMPT) > 0 then
      fail_cluster(root, cluster, "no " .. needed .. " matching aggregates among the "
        .. redis.call("HLEN", KEY.aggregates(root, cluster)) .. " uploaded in cluster " .. cluster)
    else
      redis.call("HINCRBY", job, F.ATTEMPT, 1)
      retire_values(KEY.aggregates(root, cluster))
      redis.call("DEL", KEY.aggregates(root, cluster))
      redis.call("HSET", job, F.DEADLINE, deadline_after(job, F.AGGREGATION_TIMEOUT))
      emit(root, cluster, nil, "reaggregate", "", "", { "needed", needed })
    end
    return
  end
  emit(root, cluster, nil, "consensus", "", "", { "digest", winner, "votes", votes,
    "outvoted", dissenters(root, cluster, winner) })
  apply_winner(root, cluster, winner)
end

-- The decision and its whole cascade, then the blobs it left unneeded go.
local function conclude(root, cluster, at_deadline)
  decide(root, cluster, at_deadline)
  sweep_retired(root)
end

-- At a passed deadline (or once only failed sub-clusters are missing): training closes with
-- the submissions it has (if enough), aggregation with the aggregates it has (if a quorum
-- agrees). `when` ends a failure's reason.
close_phase = function(root, cluster, when)
  local job = KEY.job(root, cluster)
  if hget_int(job, F.PROCESS_STAGE) == STAGE.AGGREGATING then
    conclude(root, cluster, true)
    return
  end
  local members = redis.call("HKEYS", KEY.clients(root, cluster))
  local submitted = redis.call("HLEN", KEY.submissions(root, cluster))
  local needed = hget_int(job, F.MIN_CLIENTS)
  if needed <= 0 or needed > #members then needed = #members end
  if submitted < needed or submitted == 0 then
    fail_cluster(root, cluster, "only " .. submitted .. " of " .. #members
      .. " members submitted " .. (when or "by the deadline") .. " (min_clients " .. needed .. ")")
    return
  end
  table.sort(members)
  local dropped = {}
  for _, m in ipairs(members) do
    if redis.call("HEXISTS", KEY.submissions(root, cluster), m) == 0 then
      dropped[#dropped + 1] = m
    end
  end
  redis.call("HSET", job, F.DROPPED, table.concat(dropped, ","))
  emit(root, cluster, nil, "dropped", "", "", { "members", table.concat(dropped, ",") })
  start_aggregating(root, cluster)
end

-- Sets a node's new status (after its checks passed) and records the event.
local function move_node(ctx, name, extra)
  local dest = TRANSITIONS[name].dest
  redis.call("HSET", member_key(ctx.root, ctx.cluster, ctx.role), ctx.node, dest)
  emit(ctx.root, ctx.cluster, ctx.role .. "/" .. ctx.node, name, ctx.status, dest, extra,
    { ctx.generation, ctx.round })
  return dest, { role = ctx.role, from = ctx.status, to = dest }
end
