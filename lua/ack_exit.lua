--[[
  ack_exit: a client or worker leaves the finished job (any status below EXITED -> EXITED).

  Preconditions: process stage FINISHED. When every member of a cluster has exited, the cluster
  exits in its parent; the job is over when the root's stages both reach EXITED. A repeated
  call is a no-op.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] role       "client" | "worker"
  ARGV[3] node       the node id
  Returns: the node's status
  Errors: UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION
  Writes: the node's status; stages; parents' member statuses; events
]]
--- @include "lib/check"
--- @include "lib/cascade"

local function main()
  local ctx, repeated = begin("ack_exit")
  if repeated then return ctx.status end
  local status, move = move_node(ctx, "ack_exit")
  settle(ctx.root, ctx.cluster, move)
  return status
end

return run(main)
