--[[
  unregister_job: removes a deleted job tree from the server's job registry.

  KEYS[1] jobs       the job registry hash            hierfl:jobs
  ARGV[1] root       the root job name
  Returns: 1 when it was listed, 0 otherwise
  Errors: none
  Writes: jobs
]]
--- @include "lib/util"

local function main()
  return redis.call("HDEL", KEYS[1], ARGV[1])
end

return run(main)
