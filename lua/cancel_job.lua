--[[
  cancel_job: stops a running job. Every cluster moves to process stage FINISHED with outcome
  "cancelled", so every node finishes or abandons its step, ACKs its exit and stops.

  Preconditions: the job exists and is still running.
  KEYS[1] job        the root cluster hash            hierfl:{ROOT}:job:ROOT
  ARGV[1] root       the root job name
  ARGV[2] reason     why (shown by status, events and explain)
  Returns: the number of clusters stopped
  Errors: BAD_ARGUMENT, UNKNOWN_JOB, ILLEGAL_TRANSITION
  Writes: process_stage of every cluster; outcome, reason; events
]]
--- @include "lib/cascade"

local function main()
  local root, reason = ARGV[1], ARGV[2]
  root_job(root)
  local outcome = redis.call("HGET", KEYS[1], F.OUTCOME)
  if outcome ~= OUTCOME.RUNNING then
    refuse(ERR.ILLEGAL_TRANSITION, "job=" .. root .. ": cannot cancel a job that has "
      .. tostring(outcome))
  end
  local clusters = 0
  each_below(root, root, function() clusters = clusters + 1 end)
  finish_tree(root, OUTCOME.CANCELLED, reason ~= "" and reason or "cancelled by a user")
  return clusters
end

return run(main)
