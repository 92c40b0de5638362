--[[
  upload_aggregate: a worker uploads its aggregate (BUSY -> DONE). When every worker has
  uploaded, consensus picks the digest its quorum agrees on (by default a strict majority; none:
  aggregation runs once more, then the cluster fails), then:
  the root starts its next round or, after the last one, finishes the tree; a sub-cluster with
  cluster epochs left starts its next local round in its subtree; a sub-cluster done with its
  epochs submits the result to its parent (weight = its samples) and turns DONE there, which
  may start the parent's aggregation.

  Preconditions: process stage AGGREGATING; the call's generation is the cluster's; the blob is
  stored. Repeating the same upload is a no-op; a different one is refused.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] role       "client" | "worker"
  ARGV[3] node       the node id
  ARGV[4] generation the generation that was aggregated
  ARGV[5] digest     digest of the stored aggregate
  Returns: the node's status
  Errors: UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION, STALE_GENERATION, MISSING_BLOB
  Writes: the node's status; aggregates; worker_stage; epoch, samples, global, process_stage,
          generation, round, deadline, attempt, dropped, failure of this cluster and those
          below or above it; history, unscored; outcome; events; deletes the blobs the new generation retired
          (the old global, submissions and aggregates; see lib/retire)
]]
--- @include "lib/check"
--- @include "lib/cascade"

local function main()
  local ctx, repeated = begin("upload_aggregate", ARGV[4])
  local digest = ARGV[5]
  if repeated then
    if redis.call("HGET", KEY.aggregates(ctx.root, ctx.cluster), ctx.node) == digest then
      return ctx.status
    end
    refuse(ERR.ILLEGAL_TRANSITION, describe(ctx, "upload_aggregate")
      .. ": not aggregating in generation " .. ctx.generation .. " (start_aggregation first)")
  end
  check_blob(ctx, "upload_aggregate", digest, "aggregate")
  local status, move = move_node(ctx, "upload_aggregate", { "digest", digest })
  redis.call("HSET", KEY.aggregates(ctx.root, ctx.cluster), ctx.node, digest)
  recompute_stages(ctx.root, ctx.cluster, move)
  local workers = redis.call("HLEN", KEY.workers(ctx.root, ctx.cluster))
  if redis.call("HLEN", KEY.aggregates(ctx.root, ctx.cluster)) == workers then
    conclude(ctx.root, ctx.cluster, false)
  end
  return status
end

return run(main)
