--[[
  ack_dataset: a client or worker has its dataset share (status JOBSHEET_ACKED -> DATASET_ACKED).

  Preconditions: the dataset flag is up. A root worker offers its randomly initialised
  parameters as a candidate for the initial global model (a sub-cluster's worker may, and need
  not: it never has to build a model); the first one offered is kept (a later one's blob is
  deleted, so it does not linger). When the root's stages both reach DATASET_ACKED, the
  candidate becomes every cluster's global, round 1 begins and every cluster starts training.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] role       "client" | "worker"
  ARGV[3] node       the node id
  ARGV[4] candidate  digest of the stored initial parameters, or "" (clients; sub-cluster
                     workers; root workers once a candidate is kept)
  Returns: the node's status
  Errors: UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION, MISSING_BLOB
  Writes: the node's status; candidate; stages; parents' member statuses; global,
          process_stage, generation, round (first round); history, unscored; events
]]
--- @include "lib/check"
--- @include "lib/cascade"

local function main()
  local ctx, repeated = begin("ack_dataset")
  if repeated then return ctx.status end
  local offered = ARGV[4] or ""
  local root_job = KEY.job(ctx.root, ctx.root)
  local kept = redis.call("HGET", root_job, F.CANDIDATE)
  if offered ~= "" then
    check_blob(ctx, "ack_dataset", offered, "candidate")
  elseif ctx.role == "worker" and ctx.cluster == ctx.root and not kept then
    refuse(ERR.BAD_ARGUMENT, describe(ctx, "ack_dataset")
      .. ": no initial parameters are kept yet, so a root worker must offer a candidate")
  end
  if offered ~= "" and not kept then
    redis.call("HSET", root_job, F.CANDIDATE, offered)
  elseif offered ~= "" and offered ~= kept then
    redis.call("DEL", KEY.blob(ctx.root, offered))
  end
  local status, move = move_node(ctx, "ack_dataset")
  settle(ctx.root, ctx.cluster, move)
  return status
end

return run(main)
