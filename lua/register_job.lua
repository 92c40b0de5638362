--[[
  register_job: lists a deployed job tree in the server's job registry, so that nodes started
  without --job can find it. (The registry lives outside the tree's hash slot, hence its own
  script.)

  KEYS[1] jobs       the job registry hash            hierfl:jobs
  ARGV[1] root       the root job name
  Returns: 1 when newly listed, 0 when it was listed already
  Errors: none
  Writes: jobs
]]
--- @include "lib/util"

local function main()
  return redis.call("HSETNX", KEYS[1], ARGV[1], now_ms())
end

return run(main)
