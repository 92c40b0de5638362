--[[
  ack_jobsheet: a client or worker has downloaded the job sheet (status DEPLOYED -> JOBSHEET_ACKED).

  Preconditions: the cluster's jobsheet flag is up. When every member of a cluster has ACKed,
  the cluster ACKs in its parent; when the root's stages both reach JOBSHEET_ACKED, the dataset
  flag goes up on every cluster, pre-order. A repeated ACK is a no-op.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] role       "client" | "worker"
  ARGV[3] node       the node id
  Returns: the node's status
  Errors: UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION
  Writes: the node's status; stages; parents' member statuses; dataset_flag; events
]]
--- @include "lib/check"
--- @include "lib/cascade"

local function main()
  local ctx, repeated = begin("ack_jobsheet")
  if repeated then return ctx.status end
  local status, move = move_node(ctx, "ack_jobsheet")
  settle(ctx.root, ctx.cluster, move)
  return status
end

return run(main)
