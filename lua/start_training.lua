--[[
  start_training: a client begins local training for this generation (DATASET_ACKED or DONE ->
  BUSY).

  Preconditions: process stage TRAINING; the call's generation is the cluster's; the client has
  not submitted in this generation. A repeated call in the same generation is a no-op.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] role       "client" | "worker"
  ARGV[3] node       the node id
  ARGV[4] generation the generation the client is training for
  Returns: the node's status
  Errors: UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION, STALE_GENERATION
  Writes: the node's status; client_stage; events
]]
--- @include "lib/check"
--- @include "lib/cascade"

local function main()
  local ctx, repeated = begin("start_training", ARGV[4])
  if repeated then return ctx.status end
  if redis.call("HEXISTS", KEY.submissions(ctx.root, ctx.cluster), ctx.node) == 1 then
    refuse(ERR.ILLEGAL_TRANSITION, describe(ctx, "start_training")
      .. ": already submitted in generation " .. ctx.generation)
  end
  local status, move = move_node(ctx, "start_training")
  recompute_stages(ctx.root, ctx.cluster, move)
  return status
end

return run(main)
