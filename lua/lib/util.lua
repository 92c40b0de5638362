--[[
  Shared helpers: the clock, refusals, small conversions.
  A refusal is raised with `refuse(code, message)` and turned into a clean error reply by
  `run(main)`, so a script's callers see "CODE message" on every Redis version (6.2 cannot
  raise error tables). Scripts check everything before their first write, so a refusal changes
  nothing.
]]
--- @include "generated/constants"

local function refuse(code, message)
  error({ hierfl = true, reply = code .. " " .. message })
end

local function run(main)
  local ok, result = pcall(main)
  if ok then return result end
  if type(result) == "table" and result.hierfl then return redis.error_reply(result.reply) end
  if type(result) == "table" and result.err then return redis.error_reply(result.err) end
  return redis.error_reply(tostring(result))
end

local function now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function root_of(cluster)
  return string.match(cluster, "^[^#]+")
end

local function split_csv(text)
  local out = {}
  if text and text ~= "" then
    for item in string.gmatch(text, "[^,]+") do out[#out + 1] = item end
  end
  return out
end

local function as_int(value, default)
  return tonumber(value) or default
end

local function hget_int(key, field)
  return tonumber(redis.call("HGET", key, field)) or 0
end

local function children_of(root, cluster)
  return split_csv(redis.call("HGET", KEY.job(root, cluster), F.CHILDREN))
end

-- Applies `fn(cluster)` to a cluster and all clusters below it, pre-order.
local function each_below(root, cluster, fn)
  fn(cluster)
  for _, child in ipairs(children_of(root, cluster)) do each_below(root, child, fn) end
end

local function member_key(root, cluster, role)
  if role == "client" then return KEY.clients(root, cluster) end
  return KEY.workers(root, cluster)
end

-- The root cluster hash of job `root`: refused unless KEYS[1] is that hash (Redis Cluster
-- routes a call by KEYS[1], and a script touches only the keys of the tree it names) and the
-- job exists.
local function root_job(root)
  local job = type(root) == "string" and root ~= "" and KEY.job(root, root) or nil
  if not job or KEYS[1] ~= job then
    refuse(ERR.BAD_ARGUMENT, "KEYS[1] is " .. tostring(KEYS[1]) .. ", expected " .. tostring(job)
      .. " (the root hash of job '" .. tostring(root) .. "')")
  end
  if redis.call("EXISTS", job) == 0 then
    refuse(ERR.UNKNOWN_JOB, "job=" .. root .. ": no such job")
  end
  return job
end
