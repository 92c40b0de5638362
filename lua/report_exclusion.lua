--[[
  report_exclusion: a worker records that it excluded a member's submission from this
  generation's aggregate, and why (malformed safetensors, wrong names, shapes or dtypes,
  non-finite values, too large, digest mismatch). Every honest worker applies the same checks,
  so the first report for a member stands for all of them.

  Preconditions: the node is a worker of the cluster; process stage AGGREGATING; the call's
  generation is the cluster's; the member submitted in this generation.
  KEYS[1] job        the cluster hash                 hierfl:{ROOT}:job:CLUSTER
  ARGV[1] cluster    the cluster job name
  ARGV[2] role       "worker"
  ARGV[3] node       the worker id
  ARGV[4] generation the generation being aggregated
  ARGV[5] member     the member whose submission was excluded
  ARGV[6] reason     why, in a sentence
  Returns: 1 when recorded, 0 when the member was reported already
  Errors: UNKNOWN_CLUSTER, UNKNOWN_NODE, BAD_ARGUMENT, ILLEGAL_TRANSITION, STALE_GENERATION
  Writes: excluded; events
]]
--- @include "lib/check"
--- @include "lib/cascade"

local function main()
  local ctx = load_node(ARGV[1], ARGV[2], ARGV[3])
  check_key(ctx, KEYS[1])
  local member, reason = ARGV[5], ARGV[6]
  local where = "job=" .. ctx.root .. " cluster=" .. ctx.cluster .. " node=" .. ctx.role .. "/"
    .. ctx.node
  if ctx.role ~= "worker" then
    refuse(ERR.ILLEGAL_TRANSITION, where .. ": only a worker excludes submissions")
  end
  if tonumber(ARGV[4]) ~= ctx.generation then
    refuse(ERR.STALE_GENERATION, where .. ": call is for generation " .. tostring(ARGV[4])
      .. " but the cluster is at generation " .. ctx.generation)
  end
  if ctx.process_stage ~= STAGE.AGGREGATING then
    refuse(ERR.ILLEGAL_TRANSITION, where .. ": process stage is " .. ctx.process_stage
      .. ", needs " .. STAGE.AGGREGATING)
  end
  if redis.call("HEXISTS", KEY.submissions(ctx.root, ctx.cluster), member) == 0 then
    refuse(ERR.BAD_ARGUMENT, where .. ": " .. tostring(member)
      .. " has no submission in this generation")
  end
  if redis.call("HSETNX", KEY.excluded(ctx.root, ctx.cluster), member, reason) == 0 then
    return 0
  end
  emit(ctx.root, ctx.cluster, "worker/" .. ctx.node, "excluded", "", "",
    { "member", member, "reason", reason })
  return 1
end

return run(main)
