--[[
  submit_params: a client submits its trained parameters and sample count (BUSY -> DONE).

  Preconditions: process stage TRAINING; the call's generation is the cluster's; the blob is
  stored. When every member has submitted, the cluster's process stage becomes AGGREGATING; when
  only sub-clusters that failed this generation are missing, the round closes as at its deadline
  (dropped, or the cluster fails under min_clients). Repeating the same submission is a no-op; a
  different one is refused.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] role       "client" | "worker"
  ARGV[3] node       the node id
  ARGV[4] generation the generation the parameters were trained in
  ARGV[5] digest     digest of the stored parameters
  ARGV[6] samples    number of training samples (a positive integer, the FedAvg weight)
  Returns: the node's status
  Errors: UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION, STALE_GENERATION, MISSING_BLOB
  Writes: the node's status; submissions; samples; client_stage; process_stage, deadline,
          dropped, failure (and a failing cluster's consequences above it); events
]]
--- @include "lib/check"
--- @include "lib/cascade"

local function main()
  local ctx, repeated = begin("submit_params", ARGV[4])
  local digest, samples = ARGV[5], tonumber(ARGV[6])
  if repeated then
    if redis.call("HGET", KEY.submissions(ctx.root, ctx.cluster), ctx.node) == digest then
      return ctx.status
    end
    refuse(ERR.ILLEGAL_TRANSITION, describe(ctx, "submit_params")
      .. ": not training in generation " .. ctx.generation .. " (start_training first)")
  end
  check_blob(ctx, "submit_params", digest, "parameters")
  if not samples or samples < 1 or samples ~= math.floor(samples) then
    refuse(ERR.BAD_ARGUMENT, describe(ctx, "submit_params")
      .. ": samples must be a positive integer, got '" .. tostring(ARGV[6]) .. "'")
  end
  local status, move = move_node(ctx, "submit_params", { "digest", digest, "samples", samples })
  recompute_stages(ctx.root, ctx.cluster, move)
  record_submission(ctx.root, ctx.cluster, ctx.node, digest, samples)
  return status
end

return run(main)
