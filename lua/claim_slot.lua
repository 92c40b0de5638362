--[[
  claim_slot: gives a node a client or worker slot of this job tree, atomically.

  Preconditions: the job exists. Without a cluster and node id, the first free slot of the role
  (pre-order) is taken; with a cluster only, its first free slot; with both, that slot is
  claimed (a restarted node reclaims its own).
  KEYS[1] job        the root cluster hash            hierfl:{ROOT}:job:ROOT
  ARGV[1] root       the root job name
  ARGV[2] role       "client" | "worker"
  ARGV[3] claimant   who claims (host:pid), for `redis-cli` readers
  ARGV[4] cluster    a cluster job name, or "" for any
  ARGV[5] node       a node id, or "" for any
  Returns: {cluster, node id}, or nil when no slot is free (or the job has ended)
  Errors: UNKNOWN_JOB, UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION
  Writes: free list of the role, claims
]]
--- @include "lib/util"

-- The first free slot of the role in `cluster`, taken off the free list, or nil.
local function take_free_in(root, role, cluster)
  local list = KEY.free(root, role)
  local prefix = cluster .. "/"
  for _, slot in ipairs(redis.call("LRANGE", list, 0, -1)) do
    if string.sub(slot, 1, #prefix) == prefix then
      redis.call("LREM", list, 1, slot)
      return string.sub(slot, #prefix + 1)
    end
  end
  return nil
end

local function main()
  local root, role, claimant, cluster, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
  root_job(root)
  if role ~= "client" and role ~= "worker" then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. ": unknown role '" .. role .. "' (client or worker)")
  end
  local outcome = redis.call("HGET", KEYS[1], F.OUTCOME)
  if outcome ~= OUTCOME.RUNNING then
    if cluster == "" and node == "" then return nil end  -- nothing to join any more
    refuse(ERR.ILLEGAL_TRANSITION, "job=" .. root .. ": the job has " .. tostring(outcome)
      .. "; there is nothing to join")
  end
  if cluster == "" then
    local slot = redis.call("LPOP", KEY.free(root, role))
    if not slot then return nil end
    cluster, node = string.match(slot, "^(.*)/([^/]+)$")
  else
    if redis.call("EXISTS", KEY.job(root, cluster)) == 0 then
      refuse(ERR.UNKNOWN_CLUSTER, "job=" .. root .. " cluster=" .. cluster .. ": no such cluster job")
    end
    if node == "" then
      node = take_free_in(root, role, cluster)
      if not node then return nil end
    elseif redis.call("HEXISTS", member_key(root, cluster, role), node) == 0
        or string.find(node, "#", 1, true) then
      refuse(ERR.UNKNOWN_NODE, "job=" .. root .. " cluster=" .. cluster .. " node=" .. role .. "/"
        .. node .. ": no such " .. role .. " in this cluster")
    else
      redis.call("LREM", KEY.free(root, role), 0, cluster .. "/" .. node)
    end
  end
  redis.call("HSET", KEY.claims(root), cluster .. "/" .. role .. "/" .. node, claimant)
  return { cluster, node }
end

return run(main)
