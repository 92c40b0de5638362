--[[
  record_metric: a root worker stores the test accuracy and loss of the global model after a
  round. The first report for a round is kept (honest workers compute the same figures).

  Preconditions: the node is a worker of the root cluster; the digest is the global agreed
  after that round (round 0 = the initial model); the job evaluates that round (every
  evaluate_every-th and the last, lib/retire `evaluated`). Once scored, the round's global is retired
  (see lib/retire) unless the job keeps checkpoints or something live still names it.
  KEYS[1] job        the root cluster hash            hierfl:{ROOT}:job:ROOT
  ARGV[1] root       the root job name
  ARGV[2] node       the worker id
  ARGV[3] round      the round the model closed
  ARGV[4] digest     the evaluated global's digest
  ARGV[5] accuracy   test accuracy in [0, 1]
  ARGV[6] loss       mean test loss
  Returns: 1 when stored, 0 when the round had a report already
  Errors: UNKNOWN_JOB, UNKNOWN_NODE, BAD_ARGUMENT
  Writes: metrics; unscored; events; deletes the round's global blob once nothing live names it
]]
--- @include "lib/util"
--- @include "lib/event"
--- @include "lib/retire"

local function main()
  local root, node, round = ARGV[1], ARGV[2], ARGV[3]
  local accuracy, loss = tonumber(ARGV[5]), tonumber(ARGV[6])
  root_job(root)
  if redis.call("HEXISTS", KEY.workers(root, root), node) == 0 then
    refuse(ERR.UNKNOWN_NODE, "job=" .. root .. " node=worker/" .. node
      .. ": only a worker of the root cluster records metrics")
  end
  if redis.call("HGET", KEY.history(root), round) ~= ARGV[4] then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. " node=worker/" .. node .. ": " .. ARGV[4]
      .. " is not the global model of round " .. round)
  end
  local fields = redis.call("HMGET", KEYS[1], F.ROUNDS, F.EVALUATE_EVERY)
  local every = tonumber(fields[2]) or 1
  if not evaluated(tonumber(round), tonumber(fields[1]), every) then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. " node=worker/" .. node .. ": round " .. round
      .. " is not evaluated (evaluate_every = " .. every .. ")")
  end
  if not accuracy or not loss or accuracy < 0 or accuracy > 1 or loss ~= loss then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. " node=worker/" .. node
      .. ": accuracy must be in [0, 1] and loss a number")
  end
  local report = cjson.encode({ round = tonumber(round), accuracy = accuracy, loss = loss,
    at = now_ms() })
  if redis.call("HSETNX", KEY.metrics(root), round, report) == 0 then return 0 end
  redis.call("HDEL", KEY.unscored(root), round)
  emit(root, root, "worker/" .. node, "metric", "", "", { "accuracy", accuracy, "loss", loss })
  retire(ARGV[4])
  sweep_retired(root)
  return 1
end

return run(main)
