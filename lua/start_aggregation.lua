--[[
  start_aggregation: a worker begins aggregating this generation's submissions (DATASET_ACKED or
  DONE -> BUSY).

  Preconditions: process stage AGGREGATING; the call's generation is the cluster's; the worker
  has not uploaded in this generation. A repeated call in the same generation is a no-op.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] role       "client" | "worker"
  ARGV[3] node       the node id
  ARGV[4] generation the generation being aggregated
  Returns: the node's status
  Errors: UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION, STALE_GENERATION
  Writes: the node's status; worker_stage; events
]]
--- @include "lib/check"
--- @include "lib/cascade"

local function main()
  local ctx, repeated = begin("start_aggregation", ARGV[4])
  if repeated then return ctx.status end
  if redis.call("HEXISTS", KEY.aggregates(ctx.root, ctx.cluster), ctx.node) == 1 then
    refuse(ERR.ILLEGAL_TRANSITION, describe(ctx, "start_aggregation")
      .. ": already uploaded in generation " .. ctx.generation)
  end
  local status, move = move_node(ctx, "start_aggregation")
  recompute_stages(ctx.root, ctx.cluster, move)
  return status
end

return run(main)
