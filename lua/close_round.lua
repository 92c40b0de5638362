--[[
  close_round: closes a cluster's current phase at its deadline. Any waiting node of the cluster
  calls it when the deadline (server time, in the cluster hash) has passed. Training closes with
  the submissions it has if there are at least min_clients (the missing members are recorded as
  dropped and rejoin at the next generation); aggregation closes with the aggregates it has if a
  quorum of them agree. Too few: the cluster fails (a sub-cluster's parent goes on at its own
  deadline, or at once if every other member has submitted or failed; the root failing ends
  the job).

  Preconditions: the call's generation is the cluster's; the cluster is training or aggregating
  with a deadline set.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] generation the generation the caller saw
  Returns: 1 when it closed the phase, 0 when there was nothing to close (no deadline, or the
           phase moved on already)
  Errors: UNKNOWN_CLUSTER, BAD_ARGUMENT, STALE_GENERATION, NOT_YET
  Writes: process_stage, deadline, dropped, failure, attempt and everything a consensus writes
          (see upload_aggregate); events
]]
--- @include "lib/cascade"

local function main()
  local cluster, asked = ARGV[1], tonumber(ARGV[2])
  local root = root_of(cluster)
  local job = KEY.job(root, cluster)
  if redis.call("EXISTS", job) == 0 then
    refuse(ERR.UNKNOWN_CLUSTER, "job=" .. root .. " cluster=" .. cluster .. ": no such cluster job")
  end
  if KEYS[1] ~= job or asked == nil then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. " cluster=" .. cluster
      .. ": expects KEYS[1] = its hash and an integer generation")
  end
  local generation = hget_int(job, F.GENERATION)
  if asked ~= generation then
    refuse(ERR.STALE_GENERATION, "job=" .. root .. " cluster=" .. cluster .. ": call is for "
      .. "generation " .. asked .. " but the cluster is at generation " .. generation)
  end
  local stage = hget_int(job, F.PROCESS_STAGE)
  local deadline = tonumber(redis.call("HGET", job, F.DEADLINE))
  if (stage ~= STAGE.TRAINING and stage ~= STAGE.AGGREGATING) or not deadline then
    return 0
  end
  local now = now_ms()
  if now < deadline then
    refuse(ERR.NOT_YET, "job=" .. root .. " cluster=" .. cluster .. ": the deadline is in "
      .. (deadline - now) .. " ms")
  end
  close_phase(root, cluster)
  return 1
end

return run(main)
