--[[
  delete_job: removes a job tree's coordination state (every cluster's hashes, the slots, the
  sheet, the history, the metrics, the unscored rounds and the events). The caller then removes
  the tree's blobs (content-addressed data, not state) and its registry entry.

  Preconditions: the job exists; no node is live (a member between JOBSHEET_ACKED and DONE, or
  a claimed one still DEPLOYED) unless forced.
  KEYS[1] job        the root cluster hash            hierfl:{ROOT}:job:ROOT
  ARGV[1] root       the root job name
  ARGV[2] force      "1" to delete even with live nodes
  Returns: the number of keys deleted
  Errors: BAD_ARGUMENT, UNKNOWN_JOB, ILLEGAL_TRANSITION
  Writes: deletes the tree's keys (except blobs)
]]
--- @include "lib/cascade"

local function live_nodes(root)
  local live = 0
  local claims = redis.call("HGETALL", KEY.claims(root))
  local claimed = {}
  for i = 1, #claims, 2 do claimed[claims[i]] = true end
  each_below(root, root, function(cluster)
    for _, role in ipairs({ "client", "worker" }) do
      local members = redis.call("HGETALL", member_key(root, cluster, role))
      for i = 1, #members, 2 do
        local status = tonumber(members[i + 1])
        local node = members[i]
        if not string.find(node, "#", 1, true) and ((status > STATUS.DEPLOYED
            and status < STATUS.EXITED) or (status == STATUS.DEPLOYED
            and claimed[cluster .. "/" .. role .. "/" .. node])) then
          live = live + 1
        end
      end
    end
  end)
  return live
end

local function main()
  local root, force = ARGV[1], ARGV[2] == "1"
  root_job(root)
  local live = live_nodes(root)
  if live > 0 and not force then
    refuse(ERR.ILLEGAL_TRANSITION, "job=" .. root .. ": " .. live .. " node(s) are still live; "
      .. "cancel the job first (hierfl cancel " .. root .. ") or force the deletion")
  end
  local doomed = {}
  each_below(root, root, function(cluster)
    for _, key in ipairs({ KEY.job(root, cluster), KEY.stages(root, cluster),
        KEY.clients(root, cluster),
        KEY.workers(root, cluster), KEY.submissions(root, cluster), KEY.samples(root, cluster),
        KEY.aggregates(root, cluster), KEY.excluded(root, cluster),
        KEY.shares(root, cluster) }) do
      doomed[#doomed + 1] = key
    end
  end)
  for _, key in ipairs({ KEY.free(root, "client"), KEY.free(root, "worker"), KEY.claims(root),
      KEY.sheet(root), KEY.testset(root), KEY.history(root), KEY.metrics(root),
      KEY.unscored(root), KEY.events(root) }) do
    doomed[#doomed + 1] = key
  end
  local deleted = 0
  for _, key in ipairs(doomed) do deleted = deleted + redis.call("DEL", key) end
  return deleted
end

return run(main)
