"""Loads the Lua scripts: inlines ``--- @include "lib/x"`` lines and the generated constants.

Each include is inlined once, at its first mention, in order (like BullMQ's loader). A missing or
circular include is reported with the file and line that asked for it. The include
``generated/constants`` is not a file: it is rendered from `hierfl.protocol` and `hierfl.keys`,
so the scripts and the Python side share one definition of every number and name.

Redis runs a script's whole chunk on every call, so the loader then makes that chunk small: a
constant such as ``F.GENERATION`` or ``STATUS.BUSY`` becomes its value (`fold_constants`, which
also refuses a name the protocol does not define), and the definitions a script never reaches
are dropped (`shake`). Building every table and every helper's closure cost ~15 µs of a
transition's ~60 µs of server time, whether the call used them or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hierfl import keys, protocol
from hierfl.errors import HierflError

INCLUDE = re.compile(r'^\s*---\s*@include\s+"([^"]+)"\s*$')
GENERATED = "generated/constants"


class LoaderError(HierflError):
    """A script's includes cannot be resolved."""


def lua_dir() -> Path:
    """The scripts ship inside the wheel (hierfl/lua) or sit at the checkout's top (lua/)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "lua", here.parent / "lua"):
        if candidate.is_dir():
            return candidate
    raise LoaderError(f"cannot find the Lua scripts next to {here}")


def script_names(directory: Path | None = None) -> list[str]:
    """Every transition script (top-level ``*.lua``), sorted."""
    return sorted(p.stem for p in (directory or lua_dir()).glob("*.lua"))


@dataclass
class _Assembly:
    directory: Path
    seen: set[str] = field(default_factory=set)
    stack: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)


def load_script(name: str, directory: Path | None = None, shaken: bool = True) -> str:
    """The full source of ``lua/<name>.lua`` with every include inlined once, without the
    top-level definitions it never reaches (unless not `shaken`)."""
    asm = _Assembly(directory or lua_dir())
    _inline(asm, name, requested_by=None)
    source = "\n".join(asm.parts)
    return shake(fold_constants(source, name)) if shaken else source


def _inline(asm: _Assembly, name: str, requested_by: str | None) -> None:
    if name in asm.stack:
        cycle = " -> ".join([*asm.stack[asm.stack.index(name) :], name])
        raise LoaderError(f"circular include at {requested_by}: {cycle}")
    if name in asm.seen:
        return
    asm.seen.add(name)
    if name == GENERATED:
        asm.parts.append(constants_lua())
        return
    path = asm.directory / f"{name}.lua"
    if not path.is_file():
        where = requested_by or "<top>"
        raise LoaderError(f'{where}: @include "{name}" not found (looked for {path})')
    asm.stack.append(name)
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        match = INCLUDE.match(line)
        if match:
            _inline(asm, match.group(1), requested_by=f"{path.name}:{lineno}")
        else:
            asm.parts.append(line)
    asm.stack.pop()


# --- constants as values, and dropping what a script does not reach --------------------------

def _enums() -> dict[str, dict[str, object]]:
    """The generated tables whose members are constants: name -> member -> value."""
    return {
        "STATUS": {s.name: int(s) for s in protocol.NodeStatus},
        "STAGE": {s.name: int(s) for s in protocol.ProcessStage},
        "F": {f.name: f.value for f in protocol.Field},
        "ERR": {e.name: e.value for e in protocol.ErrorCode},
        "OUTCOME": {o.name: o.value for o in protocol.Outcome},
        "FLAG": {"DOWN": protocol.FLAG_DOWN, "UP": protocol.FLAG_UP},
    }


def _lua_value(value: object) -> str:
    return _lua_str(value) if isinstance(value, str) else str(value)


def fold_constants(source: str, name: str = "<script>") -> str:
    """Each ``TABLE.MEMBER`` of the generated enums (`_enums`) replaced by its value, outside
    the tables' own definitions; an unknown member is refused (it would be nil at run time)."""
    enums = _enums()
    pattern = re.compile(r"(?<![\w.])(" + "|".join(enums) + r")\.(\w+)")

    def value(match: re.Match[str]) -> str:
        table, member = match.groups()
        if member not in enums[table]:
            raise LoaderError(f"{name}: {table}.{member} is not defined by hierfl.protocol")
        return _lua_value(enums[table][member])

    return "\n".join(line if line.startswith(tuple(f"local {t} =" for t in enums))
                     else pattern.sub(value, line) for line in source.splitlines())


#: A top-level definition: ``local function name(``, ``local NAME =`` or ``KEY.kind = function``.
_DEFINITION = re.compile(r"^(?:local\s+function\s+(\w+)|local\s+(\w+)\s*=|(KEY\.\w+)\s*=)")


def code_lines(source: str) -> list[str]:
    """Each line of `source` with its Lua comments blanked (``-- ...`` and ``--[[ ... ]]``,
    which may span lines), string literals kept: the text in which a name is really used."""
    out: list[str] = []
    in_comment = False
    for line in source.splitlines():
        code, i, quote = [], 0, ""
        while i < len(line):
            if in_comment:
                end = line.find("]]", i)
                if end < 0:
                    break
                in_comment, i = False, end + 2
            elif quote:
                code.append(line[i])
                if line[i] == "\\" and i + 1 < len(line):
                    code.append(line[i + 1])
                    i += 1
                elif line[i] == quote:
                    quote = ""
                i += 1
            elif line.startswith("--[[", i):
                in_comment, i = True, i + 4
            elif line.startswith("--", i):
                break
            else:
                if line[i] in "\"'":
                    quote = line[i]
                code.append(line[i])
                i += 1
        out.append("".join(code))
    return out


def shake(source: str) -> str:
    """`source` without the top-level definitions that nothing it keeps uses.

    The assembled source is cut into top-level chunks: each begins at a line in column 0 and
    takes the indented lines and the closing ``end`` lines after it. A chunk that defines a name
    (see `_DEFINITION`) is kept when a kept chunk's code mentions that name; every other chunk
    (the script's own top level, comments) is kept. A mention is any whole-word occurrence
    outside comments (`code_lines`; a string counts, so a doubt keeps a definition); order is
    preserved, so each kept definition still precedes its uses.
    """
    chunks: list[tuple[str | None, list[str], list[str]]] = []
    for line, code in zip(source.splitlines(), code_lines(source), strict=True):
        starts = line[:1] not in ("", " ", "\t") and not line.startswith("end")
        if starts or not chunks:
            match = _DEFINITION.match(line)
            name = next((g for g in match.groups() if g), None) if match else None
            chunks.append((name, [line], [code]))
        else:
            chunks[-1][1].append(line)
            chunks[-1][2].append(code)
    defined = {name for name, _, _ in chunks if name}
    kept = [i for i, (name, _, _) in enumerate(chunks) if name is None]
    wanted: set[str] = set()
    todo = list(kept)
    while todo:
        text = "\n".join(chunks[todo.pop()][2])
        for name in defined - wanted:
            if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", text):
                wanted.add(name)
                todo.extend(i for i, (n, _, _) in enumerate(chunks) if n == name)
    return "\n".join(line for name, lines, _ in chunks if name is None or name in wanted
                     for line in lines)


# --- the generated constants -------------------------------------------------------------------


def _lua_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _enum_table(name: str, members: dict[str, object]) -> str:
    body = ", ".join(f"{k} = {_lua_value(v)}" for k, v in members.items())
    return f"local {name} = {{ {body} }}"


def _key_function(kind: str, template: str) -> str:
    """``hierfl:{{{root}}}:job:{cluster}`` -> a Lua function building the same string."""
    pieces = re.split(r"(\{\{\{\w+\}\}\}|\{\w+\})", template)
    params: list[str] = []
    terms: list[str] = []
    for piece in pieces:
        if not piece:
            continue
        tagged = re.fullmatch(r"\{\{\{(\w+)\}\}\}", piece)
        plain = re.fullmatch(r"\{(\w+)\}", piece)
        if tagged or plain:
            param = (tagged or plain).group(1)
            if param not in params:
                params.append(param)
            terms.append(f'"{{" .. {param} .. "}}"' if tagged else param)
        else:
            terms.append(_lua_str(piece))
    return f"KEY.{kind} = function({', '.join(params)}) return {' .. '.join(terms)} end"


def _transition_table() -> str:
    """TRANSITIONS[name], each row built when first asked for: a script runs its whole chunk on
    every EVALSHA, and building all the rows (some 40 tables) cost 5 µs of a call that uses
    one. TRANSITION_NAMES lists them (for `pairs`-like walks)."""
    rows = []
    for i, t in enumerate(protocol.TRANSITIONS):
        roles = ", ".join(f"{r.value} = true" for r in t.roles)
        source = ", ".join(f"[{int(s)}] = true" for s in t.source)
        stage = "nil" if t.process_stage is None else int(t.process_stage)
        flag = "nil" if t.flag is None else _lua_str(t.flag.value)
        rows.append(
            f"  {'if' if i == 0 else 'elseif'} name == {_lua_str(t.name)} then "
            f"row = {{ roles = {{ {roles} }}, source = {{ {source} }}, "
            f"dest = {int(t.dest)}, process_stage = {stage}, flag = {flag}, "
            f"fenced = {str(t.fenced).lower()} }}"
        )
    names = ", ".join(_lua_str(t.name) for t in protocol.TRANSITIONS)
    return (f"local TRANSITION_NAMES = {{ {names} }}\n"
            "local TRANSITIONS = setmetatable({}, { __index = function(rows, name)\n"
            "  local row\n" + "\n".join(rows) + "\n  end\n"
            "  rawset(rows, name, row)\n  return row\nend })")


def constants_lua() -> str:
    """The Lua rendering of `hierfl.protocol` and `hierfl.keys` (never edited by hand)."""
    lines = [
        "-- generated from hierfl/protocol.py and hierfl/keys.py by hierfl/store/loader.py",
        *(_enum_table(table, members) for table, members in _enums().items()),
        f"local EVENTS_MAXLEN = {protocol.EVENTS_MAXLEN}",
        "local KEY = {}",
        *(_key_function(kind, tpl) for kind, tpl in keys.TEMPLATES.items()),
        f"KEY.jobs = function() return {_lua_str(keys.JOBS)} end",
        _transition_table(),
    ]
    return "\n".join(lines)
