"""The Lua layer's shape: the loader, the generated constants and every script's header."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from hierfl import keys, protocol
from hierfl.store.loader import (
    LoaderError,
    constants_lua,
    fold_constants,
    load_script,
    lua_dir,
    script_names,
    shake,
)
from hierfl.store.scripts import Scripts

FIXTURES = Path(__file__).parent / "fixtures" / "lua"


def test_includes_are_inlined_once_in_order():
    source = load_script("main_ok", FIXTURES)
    assert source.count("local function helper_a") == 1
    assert source.index("helper_a()") < source.index("helper_b()")


def test_shaking_drops_only_definitions_nothing_kept_mentions():
    source = shake("""-- a comment stays
local A = 1
local B = 2
local function used()
  return A
end
local function unused()
  return B
end
KEY.kept = function(x) return x end
KEY.dropped = function(x) return x end
local function main()
  return used() + KEY.kept(1)
end
return run(main)""")
    assert "local A = 1" in source and "local function used()" in source
    assert "KEY.kept" in source and "-- a comment stays" in source
    assert "unused" not in source and "local B" not in source and "KEY.dropped" not in source
    assert source.index("local A") < source.index("local function used") < source.index("main")


def test_a_name_only_a_comment_mentions_is_no_use_but_one_after_a_dashed_string_is():
    source = shake("""--[[ helper_in_block
  is documented here ]]
local function helper_in_block() return 1 end
local function helper_in_line() return 2 end
local function helper_after_string() return 3 end
local function main()
  -- helper_in_line is not called here
  return "a -- b" .. helper_after_string()
end
return run(main)""")
    assert "helper_after_string() return 3" in source
    assert "function helper_in_block" not in source and "function helper_in_line" not in source
    assert "--[[ helper_in_block" in source  # the comments themselves stay


@pytest.mark.parametrize("name", script_names())
def test_a_shaken_script_defines_every_helper_it_mentions(name):
    # A dropped helper that is still called would only fail when that path runs (a nil global).
    full = load_script(name, shaken=False)
    shaken = load_script(name)
    definition = re.compile(r"^(?:local\s+function\s+(\w+)|local\s+(\w+)\s*=|(KEY\.\w+)\s*=)",
                            re.M)
    defined = {next(g for g in m.groups() if g) for m in definition.finditer(full)}
    kept = {next(g for g in m.groups() if g) for m in definition.finditer(shaken)}
    code = re.sub(r"--\[\[.*?\]\]", "", shaken, flags=re.S)
    code = "\n".join(line.split("--")[0] for line in code.splitlines())
    mentioned = {n for n in defined if re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", code)}
    assert mentioned <= kept, sorted(mentioned - kept)


def test_constants_are_folded_into_values_and_a_misspelt_one_is_refused():
    folded = fold_constants('redis.call("HGET", key, F.GENERATION) == STATUS.BUSY and x.F.NAME')
    assert folded == 'redis.call("HGET", key, "generation") == 3 and x.F.NAME'
    with pytest.raises(LoaderError, match=r"s\.lua: F\.GENERATON is not defined by hierfl"):
        fold_constants("local g = F.GENERATON", "s.lua")


def test_missing_include_names_file_and_line():
    with pytest.raises(LoaderError, match=r'main_missing.lua:2: @include "lib/nowhere" not found'):
        load_script("main_missing", FIXTURES)


def test_circular_include_names_the_cycle():
    with pytest.raises(LoaderError, match=r"circular include at c2.lua:2: lib/c1 -> lib/c2 -> "
                                          r"lib/c1"):
        load_script("main_cycle", FIXTURES)


def test_generated_constants_match_the_protocol(r):
    """Evaluate the generated include inside Redis and compare it with the Python table."""
    probe = constants_lua() + """
local out = {}
for name, value in pairs(STATUS) do out[#out + 1] = "STATUS." .. name .. "=" .. value end
for name, value in pairs(STAGE) do out[#out + 1] = "STAGE." .. name .. "=" .. value end
for name, value in pairs(F) do out[#out + 1] = "F." .. name .. "=" .. value end
for _, name in ipairs(TRANSITION_NAMES) do
  local t = TRANSITIONS[name]
  local src = {}
  for s, _ in pairs(t.source) do src[#src + 1] = s end
  table.sort(src)
  out[#out + 1] = "T." .. name .. "=" .. table.concat(src, ",") .. ">" .. t.dest
end
out[#out + 1] = "KEY.job=" .. KEY.job("r", "r#0")
out[#out + 1] = "KEY.blob=" .. KEY.blob("r", "abc")
return out
"""
    got = {line.decode() for line in r.eval(probe, 0)}
    want = {f"STATUS.{s.name}={int(s)}" for s in protocol.NodeStatus}
    want |= {f"STAGE.{s.name}={int(s)}" for s in protocol.ProcessStage}
    want |= {f"F.{f.name}={f.value}" for f in protocol.Field}
    want |= {f"T.{t.name}={','.join(str(int(s)) for s in sorted(t.source))}>{int(t.dest)}"
             for t in protocol.TRANSITIONS}
    want |= {f"KEY.job={keys.job('r#0')}", f"KEY.blob={keys.blob('r', 'abc')}"}
    assert got == want


def header(name: str) -> str:
    text = (lua_dir() / f"{name}.lua").read_text()
    match = re.match(r"--\[\[(.*?)\]\]", text, re.S)
    assert match, f"{name}.lua has no header comment"
    return match.group(1)


def header_list(text: str, kind: str) -> list[str]:
    return [m.group(2) for m in re.finditer(rf"^\s*{kind}\[(\d+)\]\s+(\w+)", text, re.M)]


@pytest.mark.parametrize("name", script_names())
def test_header_lists_keys_argv_returns_errors_and_writes(name):
    text = header(name)
    assert text.strip().startswith(f"{name}:"), "the header starts with the script's name"
    for section in ("KEYS[1]", "Returns:", "Errors:", "Writes:"):
        assert section in text, f"{name}.lua header lacks {section}"
    numbers = [int(m) for m in re.findall(r"^\s*ARGV\[(\d+)\]", text, re.M)]
    assert numbers == list(range(1, len(numbers) + 1)), "ARGV entries in order"


@pytest.mark.parametrize("name", script_names())
def test_header_errors_are_the_codes_the_script_can_raise(name):
    text = header(name)
    listed = re.search(r"Errors:(.*)", text).group(1)
    listed_codes = set(re.findall(r"[A-Z_]{4,}", listed))
    assert listed_codes <= {e.value for e in protocol.ErrorCode}
    raised = set(re.findall(r"ERR\.([A-Z_]+)", load_script(name)))
    used = raised & _reachable_codes(name)
    assert used <= listed_codes, f"{name}.lua can raise {used - listed_codes} not in its header"


def _reachable_codes(name: str) -> set[str]:
    """Codes raised by the script's own file and the helpers it really calls."""
    own = set(re.findall(r"ERR\.([A-Z_]+)", (lua_dir() / f"{name}.lua").read_text()))
    body = (lua_dir() / f"{name}.lua").read_text()
    if "begin(" in body:  # lib/check: load_node, check_transition, check_key
        own |= {"UNKNOWN_CLUSTER", "UNKNOWN_NODE", "BAD_ARGUMENT", "ILLEGAL_TRANSITION"}
        if TRANSITION_FENCED.get(name):
            own.add("STALE_GENERATION")
    if "check_blob(" in body:
        own |= {"BAD_ARGUMENT", "MISSING_BLOB"}
    if "root_job(" in body:  # lib/util: KEYS[1] must be the job's root hash, and exist
        own |= {"BAD_ARGUMENT", "UNKNOWN_JOB"}
    return own


TRANSITION_FENCED = {t.name: t.fenced for t in protocol.TRANSITIONS}


@pytest.mark.parametrize("name", script_names())
def test_each_script_has_one_python_method_with_args_in_header_order(name):
    method = getattr(Scripts, name, None)
    assert method is not None, f"Scripts has no method for {name}.lua"
    params = [p for p in inspect.signature(method).parameters if p != "self"]
    argv = header_list(header(name), "ARGV")
    assert [p.rstrip("_") for p in params] == argv


def test_every_transition_has_its_script():
    assert {t.name for t in protocol.TRANSITIONS} <= set(script_names())


def test_no_bare_status_numbers_outside_the_table():
    """Statuses and stages come from the table (or its generated Lua), never written as
    numbers, in the scripts and in the package."""
    pattern = re.compile(r"(status|stage|flag)\w*\)?\s*[=~<>!]=?\s*\d", re.I)
    package = Path(protocol.__file__).parent
    sources = [*lua_dir().glob("*.lua"), *lua_dir().glob("lib/*.lua"),
               *(p for p in package.rglob("*.py") if p.name != "protocol.py")]
    for path in sources:
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            assert not pattern.search(line), f"{path.name}:{lineno}: {line.strip()}"


def test_only_keys_module_spells_the_key_prefix():
    package = Path(protocol.__file__).parent
    offenders = [
        str(p.relative_to(package)) for p in package.rglob("*.py")
        if p.name != "keys.py" and re.search(r"[\"']hierfl:\S", p.read_text())
    ]
    assert offenders == []
