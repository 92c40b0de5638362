--[[
  Checks a node's transition against the generated TRANSITIONS table before anything is written.
  Every refusal names the job, cluster, node, from-status and to-status.
]]
--- @include "lib/util"

-- Loads what a transition check needs; refuses unknown clusters and nodes.
local function load_node(cluster, role, node)
  local root = root_of(cluster)
  local job = KEY.job(root, cluster)
  -- One read for everything a check looks at (every transition pays for each call it makes).
  local at = redis.call("HMGET", job, F.NAME, F.PROCESS_STAGE, F.GENERATION, F.ROUND,
    F.JOBSHEET_FLAG, F.DATASET_FLAG)
  if not at[1] then
    refuse(ERR.UNKNOWN_CLUSTER, "job=" .. root .. " cluster=" .. cluster .. ": no such cluster job")
  end
  if role ~= "client" and role ~= "worker" then
    refuse(ERR.BAD_ARGUMENT, "job=" .. root .. " cluster=" .. cluster .. ": unknown role '"
      .. tostring(role) .. "' (client or worker)")
  end
  local status = redis.call("HGET", member_key(root, cluster, role), node)
  -- A sub-cluster is a member of its parent, but only the cascade moves it.
  if not status or string.find(node, "#", 1, true) then
    refuse(ERR.UNKNOWN_NODE, "job=" .. root .. " cluster=" .. cluster .. " node=" .. role .. "/"
      .. node .. ": no such " .. role .. " in this cluster")
  end
  return {
    root = root, cluster = cluster, role = role, node = node, job = job,
    status = tonumber(status),
    process_stage = as_int(at[2], 0),
    generation = as_int(at[3], 0),
    round = as_int(at[4], 0),
    flags = { [F.JOBSHEET_FLAG] = as_int(at[5], 0), [F.DATASET_FLAG] = as_int(at[6], 0) },
  }
end

local function describe(ctx, name)
  return "job=" .. ctx.root .. " cluster=" .. ctx.cluster .. " node=" .. ctx.role .. "/"
    .. ctx.node .. " from=" .. ctx.status .. " to=" .. TRANSITIONS[name].dest .. " (" .. name .. ")"
end

-- Returns true when the call repeats one that already took effect (a no-op success).
local function check_transition(ctx, name, generation)
  local t = TRANSITIONS[name]
  if not t.roles[ctx.role] then
    refuse(ERR.ILLEGAL_TRANSITION, describe(ctx, name) .. ": not allowed for a " .. ctx.role)
  end
  if t.fenced then
    local asked = tonumber(generation)
    if asked == nil then
      refuse(ERR.BAD_ARGUMENT, describe(ctx, name) .. ": generation must be an integer")
    end
    if asked ~= ctx.generation then
      refuse(ERR.STALE_GENERATION, describe(ctx, name) .. ": call is for generation " .. asked
        .. " but the cluster is at generation " .. ctx.generation)
    end
  end
  if t.flag and ctx.flags[t.flag] ~= FLAG.UP then
    refuse(ERR.ILLEGAL_TRANSITION, describe(ctx, name) .. ": " .. t.flag .. " is not set yet")
  end
  if t.process_stage and ctx.process_stage ~= t.process_stage then
    refuse(ERR.ILLEGAL_TRANSITION, describe(ctx, name) .. ": process stage is "
      .. ctx.process_stage .. ", needs " .. t.process_stage)
  end
  if ctx.status == t.dest then return true end
  if not t.source[ctx.status] then
    refuse(ERR.ILLEGAL_TRANSITION, describe(ctx, name) .. ": not allowed from status " .. ctx.status)
  end
  return false
end

-- KEYS[1] must be the cluster hash the call names (so Redis Cluster routes it to its slot).
local function check_key(ctx, key)
  if key ~= ctx.job then
    refuse(ERR.BAD_ARGUMENT, "job=" .. ctx.root .. " cluster=" .. ctx.cluster .. ": KEYS[1] is "
      .. tostring(key) .. ", expected " .. ctx.job)
  end
end

local function check_blob(ctx, name, digest, what)
  if type(digest) ~= "string" or not string.match(digest, "^%x+$") then
    refuse(ERR.BAD_ARGUMENT, describe(ctx, name) .. ": " .. what .. " digest '"
      .. tostring(digest) .. "' is not a hex digest")
  end
  if redis.call("EXISTS", KEY.blob(ctx.root, digest)) == 0 then
    refuse(ERR.MISSING_BLOB, describe(ctx, name) .. ": " .. what .. " " .. digest
      .. " is not stored")
  end
end

-- Loads the node and checks KEYS[1] and the transition; true means a repeated call.
local function begin(name, generation)
  local ctx = load_node(ARGV[1], ARGV[2], ARGV[3])
  check_key(ctx, KEYS[1])
  return ctx, check_transition(ctx, name, generation)
end
