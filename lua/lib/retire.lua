--[[
  Retiring parameter blobs that no live round can need any more, so Redis memory stays bounded
  however many rounds a job runs.

  A script marks the digests its cascade replaced with `retire` (a cluster's old global, its
  last generation's submissions and aggregates, a scored round's checkpoint); `sweep_retired`,
  called once the cascade of that call is complete, deletes each marked blob that nothing live
  still names. Live: every cluster's global, submissions and aggregates; the kept initial
  candidate; the globals of evaluated rounds that no worker has scored yet (the unscored hash:
  a root worker evaluates them after the round), or every round's with keep_checkpoints.
  Dataset shares and the test split are never marked, so they need no check.
]]
--- @include "lib/util"

-- Whether a root worker scores the global after `round` (hierfl.protocol.evaluated): every
-- evaluate_every-th round and always the last; with 0, only the last.
local function evaluated(round, rounds, every)
  return round == rounds or (every > 0 and round % every == 0)
end

-- Records the global agreed after `round` (0: the initial model): in the history, and among
-- the unscored rounds when a root worker is to evaluate it.
local function record_global(root, round, digest)
  redis.call("HSET", KEY.history(root), round, digest)
  local job = redis.call("HMGET", KEY.job(root, root), F.ROUNDS, F.EVALUATE_EVERY)
  if evaluated(round, tonumber(job[1]) or 0, tonumber(job[2]) or 1) then
    redis.call("HSET", KEY.unscored(root), round, digest)
  end
end

local RETIRING = {}

local function retire(digest)
  if digest and digest ~= "" then RETIRING[digest] = true end
end

local function retire_values(key)
  for _, digest in ipairs(redis.call("HVALS", key)) do retire(digest) end
end

local function live_blobs(root)
  local live = {}
  local function mark_values(key)
    for _, digest in ipairs(redis.call("HVALS", key)) do live[digest] = true end
  end
  local function walk(cluster)
    local fields = redis.call("HMGET", KEY.job(root, cluster), F.GLOBAL, F.CHILDREN)
    if fields[1] then live[fields[1]] = true end
    mark_values(KEY.submissions(root, cluster))
    mark_values(KEY.aggregates(root, cluster))
    for _, child in ipairs(split_csv(fields[2])) do walk(child) end
  end
  walk(root)
  local top = redis.call("HMGET", KEY.job(root, root), F.CANDIDATE, F.KEEP_CHECKPOINTS)
  if top[1] then live[top[1]] = true end
  mark_values(tonumber(top[2]) == 1 and KEY.history(root) or KEY.unscored(root))
  return live
end

-- Deletes the marked blobs nothing live names; returns how many.
local function sweep_retired(root)
  if next(RETIRING) == nil then return 0 end
  local live, deleted = live_blobs(root), 0
  for digest in pairs(RETIRING) do
    if not live[digest] then
      deleted = deleted + redis.call("DEL", KEY.blob(root, digest))
    end
  end
  RETIRING = {}
  return deleted
end
