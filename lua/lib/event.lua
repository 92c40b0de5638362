--[[
  The job's event stream: one entry per transition or cascade step, capped at EVENTS_MAXLEN.
  Fields: cluster, node ("role/id" or "-"), op, from, to, gen, round, plus `extra`, a flat list of name, value pairs.
]]
--- @include "lib/util"

-- `at`, when the caller has them: {generation, round} of the cluster now (else read here).
local function emit(root, cluster, node, op, from, to, extra, at)
  if not at then
    local now = redis.call("HMGET", KEY.job(root, cluster), F.GENERATION, F.ROUND)
    at = { as_int(now[1], 0), as_int(now[2], 0) }
  end
  local fields = {
    "cluster", cluster, "node", node or "-", "op", op,
    "from", tostring(from or ""), "to", tostring(to or ""),
    "gen", tostring(at[1]), "round", tostring(at[2]),
  }
  for i = 1, #(extra or {}) do fields[#fields + 1] = tostring(extra[i]) end
  redis.call("XADD", KEY.events(root), "MAXLEN", "~", EVENTS_MAXLEN, "*", unpack(fields))
end
