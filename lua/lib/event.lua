--[[
  The job's event stream: one entry per transition or cascade step, capped at EVENTS_MAXLEN.
  Fields: cluster, node ("role/id" or "-"), op, from, to, gen, round, plus `extra`, a flat list of name, value pairs.
]]
--- @include "lib/util"

local function emit(root, cluster, node, op, from, to, extra)
  local job = KEY.job(root, cluster)
  local fields = {
    "cluster", cluster, "node", node or "-", "op", op,
    "from", tostring(from or ""), "to", tostring(to or ""),
    "gen", tostring(hget_int(job, F.GENERATION)), "round", tostring(hget_int(job, F.ROUND)),
  }
  for i = 1, #(extra or {}) do fields[#fields + 1] = tostring(extra[i]) end
  redis.call("XADD", KEY.events(root), "MAXLEN", "~", EVENTS_MAXLEN, "*", unpack(fields))
end
