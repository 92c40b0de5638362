--[[
  discard_blob: a node takes back a parameter blob it stored for a call the scripts refused (a
  submission or aggregate that came after its generation ended), so that the blob does not stay
  in Redis for the rest of the job. It goes only if nothing live names it (lib/retire's rule:
  a global, a submission, an aggregate, the initial candidate, an unscored round's checkpoint)
  and it is no dataset share or test split.

  Preconditions: KEYS[1] is the job's root hash and the job exists; the digest is 64 hex
  digits (SHA-256).
  KEYS[1] job        the root cluster hash            hierfl:{ROOT}:job:ROOT
  ARGV[1] root       the root job name
  ARGV[2] digest     the blob's digest
  Returns: 1 when the blob was deleted, 0 when it stays (live, data, or not stored)
  Errors: UNKNOWN_JOB, BAD_ARGUMENT
  Writes: deletes the blob
]]
--- @include "lib/util"
--- @include "lib/retire"

-- Whether `digest` is the test split or any client's dataset share (never retired).
local function is_data(root, digest)
  local found = redis.call("GET", KEY.testset(root)) == digest
  each_below(root, root, function(cluster)
    for _, share in ipairs(redis.call("HVALS", KEY.shares(root, cluster))) do
      if share == digest then found = true end
    end
  end)
  return found
end

local function main()
  local root, digest = ARGV[1], ARGV[2]
  root_job(root)
  if type(digest) ~= "string" or #digest ~= 64 or not string.match(digest, "^%x+$") then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. ": '" .. tostring(digest)
      .. "' is not a blob digest (64 hex digits)")
  end
  if is_data(root, digest) then return 0 end
  retire(digest)
  return sweep_retired(root)
end

return run(main)
