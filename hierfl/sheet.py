"""The TOML job sheet: one file that says what a job tree trains, on what, and how.

A sheet is parsed once on the deploying side, checked field by field (every error names the sheet,
the field as ``[section].key``, the bad value and why), normalised (scalars broadcast to one value
per tree level, relative dataset paths made absolute) and stored as canonical JSON. Nodes download
that JSON and re-validate it with `JobSheet.from_json`, so a node never trusts a malformed sheet.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hierfl.errors import BadInput
from hierfl.jobtree import ClusterSpec, Tolerance, build_tree, check_root_name
from hierfl.wording import counted

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

#: The most clusters one sheet may describe; a typo such as ``sub = [200, 200]`` fails early.
MAX_CLUSTERS = 10_000
MAX_DEPTH = 8

OPTIMIZERS = ("sgd", "adam")
RULES = ("fedavg", "median", "trimmed_mean")
PARTITIONS = ("iid", "dirichlet", "shards")
BUILTIN_DATASETS = ("digits",)
DATASET_SUFFIXES = (".npz", ".csv")
_FACTORY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Topology:
    """Per-level tree shape; after parsing every list but ``sub`` has ``depth + 1`` entries."""

    sub: tuple[int, ...] = ()
    clients: tuple[int, ...] = (2,)
    workers: tuple[int, ...] = (1,)
    cluster_epochs: tuple[int, ...] = (1,)

    @property
    def depth(self) -> int:
        return len(self.sub)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    hidden: tuple[int, ...] = (64,)
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class TrainingConfig:
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 32
    local_epochs: int = 1  # 0: no training, a client submits the global unchanged (benchmarks)


@dataclass(frozen=True)
class AggregationConfig:
    rule: str = "fedavg"
    trim: float = 0.1
    max_params_mb: float = 0.0  # submissions larger than this are excluded; 0 = twice the model


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    test_fraction: float = 0.2
    partition: str = "dirichlet"
    alpha: float = 0.5
    shards_per_client: int = 2
    n_features: int = 0
    n_classes: int = 0


@dataclass(frozen=True)
class ToleranceConfig:
    """Stragglers and dropouts: how long a cluster waits, and how many members suffice.

    One value per level of the tree, root first (a single value in the sheet applies to every
    level): a parent must wait longer than its sub-clusters do, and may need fewer members.
    """

    round_timeout: tuple[float, ...] = (0.0,)  # seconds a generation waits; 0 = forever
    min_clients: tuple[int, ...] = (0,)  # submissions that suffice at the deadline; 0 = all
    aggregation_timeout: tuple[float, ...] = (0.0,)  # seconds aggregation waits; 0 = forever
    quorum: tuple[int, ...] = (0,)  # identical aggregates consensus needs; 0 = a majority

    def at(self, level: int) -> Tolerance:
        """The tolerance of a cluster at `level` (the last value covers deeper levels)."""

        def pick(values: tuple) -> Any:
            return values[min(level, len(values) - 1)]

        return Tolerance(
            round_timeout_ms=round(pick(self.round_timeout) * 1000),
            min_clients=pick(self.min_clients),
            aggregation_timeout_ms=round(pick(self.aggregation_timeout) * 1000),
            quorum=pick(self.quorum),
        )

    def for_clusters(self, depth: int) -> list[Tolerance]:
        return [self.at(level) for level in range(depth + 1)]


@dataclass(frozen=True)
class JobSheet:
    name: str
    rounds: int
    seed: int
    keep_checkpoints: bool = False  # keep every round's global blob (else only live ones)
    evaluate_every: int = 1  # score every k-th round's model on the test split (0: the last)
    topology: Topology = field(default_factory=Topology)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tolerance: ToleranceConfig = field(default_factory=ToleranceConfig)

    def to_dict(self) -> dict[str, Any]:
        """The sheet in TOML's section layout, with lists instead of tuples."""
        sections = {
            "topology": self.topology,
            "model": self.model,
            "training": self.training,
            "aggregation": self.aggregation,
            "data": self.data,
            "tolerance": self.tolerance,
        }
        doc: dict[str, Any] = {"job": {"name": self.name, "rounds": self.rounds, "seed": self.seed,
                                       "keep_checkpoints": self.keep_checkpoints,
                                       "evaluate_every": self.evaluate_every}}
        for title, section in sections.items():
            doc[title] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in asdict(section).items()
            }
        return doc

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal sheets give identical text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "<stored job sheet>") -> JobSheet:
        """Read a sheet stored by `to_json`, validating it again."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadInput(f"job sheet {source}: not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise BadInput(f"job sheet {source}: expected a JSON object, got {_show(doc)}")
        return _from_mapping(doc, source, base_dir=None)

    def tree(self) -> list[ClusterSpec]:
        """The job tree in pre-order, as the deploy script receives it."""
        t = self.topology
        return build_tree(
            self.name,
            sub=list(t.sub),
            clients=list(t.clients),
            workers=list(t.workers),
            cluster_epochs=list(t.cluster_epochs),
            tolerance=self.tolerance.for_clusters(len(t.sub)),
        )

    def with_overrides(self, **overrides: Any) -> JobSheet:
        """A copy with ``[job]`` or topology fields replaced, re-validated.

        Scalars follow the sheet's broadcast rules. When ``sub`` changes the depth, per-level
        lists that are not overridden (topology and tolerance) shrink or grow to their leaf
        value (as a scalar would).
        """
        doc = self.to_dict()
        job_keys, topo_keys = (
            ("name", "rounds", "seed", "keep_checkpoints", "evaluate_every"),
            ("sub", "clients", "workers", "cluster_epochs"),
        )
        for key, value in overrides.items():
            if key in job_keys:
                doc["job"][key] = value
            elif key in topo_keys:
                doc["topology"][key] = list(value) if isinstance(value, tuple) else value
            else:
                hint = _suggest(key, job_keys + topo_keys, "'{}'")
                raise BadInput(
                    f"cannot override {key!r}{hint}; valid: {', '.join(job_keys + topo_keys)}"
                )
        topo = doc["topology"]
        depth_changed = isinstance(topo["sub"], list) and len(topo["sub"]) != self.topology.depth
        if "sub" in overrides and depth_changed:
            for key in ("clients", "workers", "cluster_epochs"):
                if key not in overrides:
                    topo[key] = topo[key][-1]
            # Per-level tolerance is one value per level too.
            doc["tolerance"] = {k: v[-1] for k, v in doc["tolerance"].items()}
        return _from_mapping(doc, "<overrides>", base_dir=None)


def load_sheet(path: str | Path) -> JobSheet:
    """Read and validate a sheet file; a relative dataset path is taken relative to it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"job sheet {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"job sheet {path}: cannot read it: {exc}") from None
    return parse_sheet(text, source=str(path), base_dir=path.resolve().parent)


def parse_sheet(text: str, source: str = "<sheet>", base_dir: Path | None = None) -> JobSheet:
    """Parse TOML text; ``base_dir`` anchors a relative dataset path (None: keep it as given)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"job sheet {source}: invalid TOML: {exc}") from None
    return _from_mapping(doc, source, base_dir)


def default_sheet(
    name: str, sub: int = 2, depth: int = 1, clients: int = 3, workers: int = 3, rounds: int = 5
) -> JobSheet:
    """A uniform tree on the digits data with hyperparameters that reach >= 0.95 accuracy."""
    doc = {
        "job": {"name": name, "rounds": rounds, "seed": 0},
        "topology": {
            "sub": [sub] * depth,
            "clients": clients,
            "workers": workers,
            "cluster_epochs": 1,
        },
        "model": {"name": "mlp", "hidden": [64]},
        "training": {
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "batch_size": 32,
            "local_epochs": 5,
        },
        "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 0.5},
    }
    return _from_mapping(doc, f"<default {name}>", base_dir=None)


# --- validation -----------------------------------------------------------------------------

_MISSING = object()


def _show(value: Any) -> str:
    """A value as the user wrote it (TOML-like), for error messages."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _suggest(word: str, choices: tuple[str, ...] | list[str], fmt: str = "{}") -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {fmt.format(close[0])}?)" if close else ""


class _Section:
    """Reads one ``[section]`` table, remembering which keys were used."""

    def __init__(self, source: str, name: str, table: Mapping[str, Any]) -> None:
        self.source, self.name, self.table = source, name, table

    def fail(self, key: str, why: str, value: Any) -> BadInput:
        return BadInput(f"job sheet {self.source}: [{self.name}].{key} {why}, got {_show(value)}")

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.table:
            return self.table[key]
        if default is _MISSING:
            raise BadInput(f"job sheet {self.source}: [{self.name}].{key} is required")
        return default

    def integer(
        self, key: str, default: Any = _MISSING, minimum: int = 0, maximum: int = 2**63 - 1
    ) -> int:
        value = self.raw(key, default)
        if not _is_int(value) or not minimum <= value <= maximum:
            raise self.fail(key, _int_rule(minimum, maximum), value)
        return value

    def number(self, key: str, default: Any, rule: str, ok: Callable[[float], bool]) -> float:
        value = self.raw(key, default)
        if not _is_number(value) or not ok(float(value)):
            raise self.fail(key, f"must be {rule}", value)
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false", value)
        return value

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.raw(key, default)
        if value not in choices:
            options = " | ".join(f'"{c}"' for c in choices)
            hint = _suggest(value, choices, '"{}"') if isinstance(value, str) else ""
            raise self.fail(key, f"must be one of {options}{hint}", value)
        return value

    def int_list(self, key: str, default: Any, minimum: int, allow_scalar: bool) -> Any:
        """A list of integers >= minimum (or a scalar when ``allow_scalar``)."""
        value = self.raw(key, default)
        if allow_scalar and _is_int(value) and value >= minimum:
            return value
        if isinstance(value, list) and all(_is_int(v) and v >= minimum for v in value):
            return list(value)
        what = f"a list of integers >= {minimum}"
        raise self.fail(key, f"must be {what}{' or one integer' if allow_scalar else ''}", value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _int_rule(minimum: int, maximum: int) -> str:
    if maximum < 2**63 - 1:
        return f"must be an integer between {minimum} and {maximum}"
    return f"must be an integer >= {minimum}"


#: Every section and its keys, in documentation order.
_KEYS: dict[str, tuple[str, ...]] = {
    "job": ("name", "rounds", "seed", "keep_checkpoints", "evaluate_every"),
    "topology": ("sub", "clients", "workers", "cluster_epochs"),
    "model": ("name", "hidden", "kwargs"),
    "training": ("optimizer", "lr", "momentum", "batch_size", "local_epochs"),
    "aggregation": ("rule", "trim", "max_params_mb"),
    "data": (
        "dataset",
        "test_fraction",
        "partition",
        "alpha",
        "shards_per_client",
        "n_features",
        "n_classes",
    ),
    "tolerance": ("round_timeout", "min_clients", "aggregation_timeout", "quorum"),
}


def _check_layout(doc: Mapping[str, Any], source: str) -> None:
    """Refuse unknown sections and keys, suggesting the closest valid name."""
    prefix = f"job sheet {source}"
    for title, table in doc.items():
        if title not in _KEYS:
            if not isinstance(table, dict):
                home = next((s for s, keys in _KEYS.items() if title in keys), None)
                hint = f" (did you mean [{home}].{title}?)" if home else ""
                raise BadInput(f"{prefix}: key {title} must be inside a section{hint}")
            hint = _suggest(title, list(_KEYS), "[{}]")
            raise BadInput(
                f"{prefix}: unknown section [{title}]{hint}; valid sections: "
                + ", ".join(f"[{s}]" for s in _KEYS)
            )
        if not isinstance(table, dict):
            raise BadInput(f"{prefix}: [{title}] must be a table (a section), got {_show(table)}")
        for key in table:
            if key not in _KEYS[title]:
                hint = _suggest(key, _KEYS[title], f"[{title}].{{}}")
                raise BadInput(
                    f"{prefix}: unknown key [{title}].{key}{hint}; valid keys in "
                    f"[{title}]: {', '.join(_KEYS[title])}"
                )
    if "job" not in doc:
        raise BadInput(f'{prefix}: the [job] section is required (with at least name = "...")')


def _from_mapping(doc: Mapping[str, Any], source: str, base_dir: Path | None) -> JobSheet:
    _check_layout(doc, source)

    def section(title: str) -> _Section:
        return _Section(source, title, doc.get(title, {}))

    job = section("job")
    name = job.raw("name")
    if not isinstance(name, str):
        raise job.fail("name", "must be a string", name)
    try:
        check_root_name(name)
    except BadInput as exc:
        raise BadInput(f"job sheet {source}: [job].name: {exc}") from None
    sheet = JobSheet(
        name=name,
        rounds=job.integer("rounds", 5, minimum=1, maximum=1_000_000),
        seed=job.integer("seed", 0, minimum=0),
        keep_checkpoints=job.boolean("keep_checkpoints", False),
        evaluate_every=job.integer("evaluate_every", 1, minimum=0),
        topology=_topology(section("topology")),
        model=_model(section("model")),
        training=_training(section("training")),
        aggregation=_aggregation(section("aggregation")),
        data=_data(section("data"), base_dir),
    )
    sheet = replace(sheet, tolerance=_tolerance(section("tolerance"), sheet.topology))
    try:
        sheet.tree()
    except BadInput as exc:
        raise BadInput(f"job sheet {source}: [topology]: {exc}") from None
    return sheet


def _per_level(
    sec: _Section, key: str, value: Any, depth: int, scalar: Callable[[int], list[int]]
) -> tuple[int, ...]:
    if isinstance(value, list):
        if len(value) != depth + 1:
            raise sec.fail(
                key,
                f"needs {depth + 1} values (one per level 0..{depth}, as "
                f"len([topology].sub) = {depth}) or one integer",
                value,
            )
        return tuple(value)
    return tuple(scalar(value))


def _topology(sec: _Section) -> Topology:
    sub = sec.int_list("sub", [], minimum=1, allow_scalar=False)
    depth = len(sub)
    if depth > MAX_DEPTH:
        raise sec.fail("sub", f"allows at most {MAX_DEPTH} levels", sub)
    clients = _per_level(
        sec, "clients", sec.int_list("clients", 2, 0, True), depth, lambda c: [0] * depth + [c]
    )
    workers = _per_level(
        sec, "workers", sec.int_list("workers", 1, 1, True), depth, lambda w: [w] * (depth + 1)
    )
    epochs = _per_level(
        sec,
        "cluster_epochs",
        sec.int_list("cluster_epochs", 1, 1, True),
        depth,
        lambda e: [e] * (depth + 1),
    )
    if clients[depth] < 1:
        raise sec.fail(
            "clients",
            f"must give each leaf cluster (level {depth}) at least one client",
            list(clients),
        )
    n_clusters = sum(math.prod(sub[:level]) for level in range(depth + 1))
    if n_clusters > MAX_CLUSTERS:
        raise sec.fail(
            "sub", f"describes {n_clusters} clusters; at most {MAX_CLUSTERS} allowed", sub
        )
    return Topology(
        sub=tuple(sub), clients=clients, workers=workers, cluster_epochs=(1, *epochs[1:])
    )


def _check_kwargs(sec: _Section, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise sec.fail("kwargs", "must be a table of keyword arguments", value)
    reserved = {"n_features", "n_classes"} & set(value)
    if reserved:
        raise sec.fail(
            "kwargs",
            f"must not set {', '.join(sorted(reserved))} (hierfl passes them from the data)",
            value,
        )
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise sec.fail(
            "kwargs",
            "must hold only strings, numbers, booleans, lists and tables "
            "(finite numbers, no dates)",
            value,
        ) from None
    return dict(value)


def _model(sec: _Section) -> ModelConfig:
    name = sec.raw("name", "mlp")
    if not isinstance(name, str) or (name != "mlp" and not _FACTORY.match(name)):
        raise sec.fail("name", 'must be "mlp" or "package.module:factory"', name)
    hidden = sec.int_list("hidden", [64], minimum=1, allow_scalar=False)
    kwargs = _check_kwargs(sec, sec.raw("kwargs", {}))
    return ModelConfig(name=name, hidden=tuple(hidden), kwargs=kwargs)


def _training(sec: _Section) -> TrainingConfig:
    return TrainingConfig(
        optimizer=sec.choice("optimizer", "sgd", OPTIMIZERS),
        lr=sec.number("lr", 0.05, "a positive number", lambda v: v > 0),
        momentum=sec.number("momentum", 0.9, "a number in [0, 1)", lambda v: 0 <= v < 1),
        batch_size=sec.integer("batch_size", 32, minimum=1, maximum=1_000_000),
        local_epochs=sec.integer("local_epochs", 1, minimum=0, maximum=10_000),
    )


def _tolerance(sec: _Section, topology: Topology) -> ToleranceConfig:
    depth = len(topology.sub)
    seconds = "a number of seconds >= 0 (0 = wait forever)"

    def levels(key: str, rule: str, ok: Callable[[Any], bool]) -> tuple:
        value = sec.raw(key, 0)
        values = value if isinstance(value, list) else [value] * (depth + 1)
        if len(values) != depth + 1:
            raise sec.fail(key, f"needs {depth + 1} values (one per level 0..{depth}) or one",
                           value)
        if not all(ok(v) for v in values):
            raise sec.fail(key, f"must be {rule} (or a list of them, one per level)", value)
        return tuple(values)

    def is_seconds(v: Any) -> bool:
        return _is_number(v) and v >= 0

    def is_count(v: Any) -> bool:
        return _is_int(v) and v >= 0

    tolerance = ToleranceConfig(
        round_timeout=tuple(map(float, levels("round_timeout", seconds, is_seconds))),
        min_clients=levels("min_clients", "an integer >= 0 (0 = every member)", is_count),
        aggregation_timeout=tuple(
            map(float, levels("aggregation_timeout", seconds, is_seconds))),
        quorum=levels("quorum", "an integer >= 0 (0 = a majority of the workers)", is_count),
    )
    _check_tolerance(sec, tolerance, topology)
    return tolerance


def _check_tolerance(sec: _Section, tol: ToleranceConfig, topology: Topology) -> None:
    """Counts a level can meet, and deadlines that nest: a parent that closed its round while
    its sub-clusters still had time would drop them for being on time."""
    t = topology
    for level in range(len(t.sub) + 1):
        members = t.clients[level] + (t.sub[level] if level < len(t.sub) else 0)
        if tol.min_clients[level] > members:
            raise sec.fail("min_clients", f"asks for {tol.min_clients[level]} at level {level}, "
                           f"whose clusters have {members} members", sec.raw("min_clients", 0))
        if tol.quorum[level] > t.workers[level]:
            raise sec.fail("quorum", f"asks for {tol.quorum[level]} at level {level}, whose "
                           f"clusters have {t.workers[level]} workers", sec.raw("quorum", 0))
        if level == len(t.sub) or not tol.round_timeout[level] or not tol.round_timeout[level + 1]:
            continue
        child = t.cluster_epochs[level + 1] * (
            tol.round_timeout[level + 1] + tol.aggregation_timeout[level + 1])
        if tol.round_timeout[level] <= child:
            raise sec.fail(
                "round_timeout",
                f"at level {level} ({tol.round_timeout[level]:g} s) must exceed the time its "
                f"sub-clusters may take, cluster_epochs x (round_timeout + aggregation_timeout) "
                f"of level {level + 1} = {child:g} s, or it would drop them while they still "
                "have time", sec.raw("round_timeout", 0))


def _aggregation(sec: _Section) -> AggregationConfig:
    return AggregationConfig(
        rule=sec.choice("rule", "fedavg", RULES),
        trim=sec.number("trim", 0.1, "a number in [0, 0.5)", lambda v: 0 <= v < 0.5),
        max_params_mb=float(sec.number("max_params_mb", 0.0, "a number of megabytes >= 0",
                                       lambda v: v >= 0)),
    )


def _dataset(sec: _Section, base_dir: Path | None) -> str:
    value = sec.raw("dataset", "digits")
    if not isinstance(value, str) or not value:
        raise sec.fail("dataset", 'must be "digits" or a path to a .npz or .csv file', value)
    if value in BUILTIN_DATASETS:
        return value
    if not value.lower().endswith(DATASET_SUFFIXES):
        hint = _suggest(value, BUILTIN_DATASETS, '"{}"')
        raise sec.fail("dataset", f'must be "digits" or a path ending in .npz or .csv{hint}', value)
    path = Path(value).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = (base_dir / path).resolve()
    return str(path)


def _data(sec: _Section, base_dir: Path | None) -> DataConfig:
    return DataConfig(
        dataset=_dataset(sec, base_dir),
        test_fraction=sec.number(
            "test_fraction", 0.2, "a number from 0.01 to 0.9 (most data should train)",
            lambda v: 0.01 <= v <= 0.9
        ),
        partition=sec.choice("partition", "dirichlet", PARTITIONS),
        alpha=sec.number("alpha", 0.5, "a positive number", lambda v: v > 0),
        shards_per_client=sec.integer("shards_per_client", 2, minimum=1, maximum=1_000_000),
        n_features=sec.integer("n_features", 0, minimum=0),
        n_classes=sec.integer("n_classes", 0, minimum=0),
    )


def sheet_summary(sheet: JobSheet) -> str:
    """One line for logs: name, rounds, tree size and data."""
    specs = sheet.tree()
    n_clients = sum(len(s.clients) for s in specs)
    n_workers = sum(len(s.workers) for s in specs)
    return (
        f"{sheet.name}: {counted(sheet.rounds, 'rounds')}, {counted(len(specs), 'clusters')}, "
        f"{counted(n_clients, 'clients')}, {counted(n_workers, 'workers')}, "
        f"data {sheet.data.dataset} ({sheet.data.partition})"
    )


__all__ = [
    "AggregationConfig",
    "DataConfig",
    "JobSheet",
    "ModelConfig",
    "Topology",
    "TrainingConfig",
    "default_sheet",
    "load_sheet",
    "parse_sheet",
    "sheet_summary",
]
