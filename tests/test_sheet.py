"""The job sheet: parsing, defaults, broadcast rules, canonical JSON and error messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hierfl.errors import BadInput
from hierfl.jobtree import leaf_client_slots
from hierfl.sheet import JobSheet, default_sheet, load_sheet, parse_sheet

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MINIMAL = '[job]\nname = "demo"\n'


def parse(extra: str, source: str = "x.toml") -> JobSheet:
    return parse_sheet(MINIMAL + extra, source=source)


def test_minimal_sheet_takes_the_documented_defaults() -> None:
    sheet = parse("")
    assert (sheet.name, sheet.seed) == ("demo", 0)
    topo = sheet.topology
    assert (topo.sub, topo.clients, topo.workers, topo.cluster_epochs) == ((), (2,), (1,), (1,))
    assert sheet.model.name == "mlp" and sheet.model.hidden == (64,)
    assert (sheet.training.optimizer, sheet.training.lr, sheet.training.momentum) == (
        "sgd",
        0.05,
        0.9,
    )
    assert (sheet.training.batch_size, sheet.training.local_epochs) == (32, 1)
    assert (sheet.aggregation.rule, sheet.aggregation.trim) == ("fedavg", 0.1)
    data = sheet.data
    assert (data.dataset, data.partition, data.alpha, data.test_fraction) == (
        "digits",
        "dirichlet",
        0.5,
        0.2,
    )
    assert (data.n_features, data.n_classes) == (0, 0)
    assert [s.name for s in sheet.tree()] == ["demo"]


def test_scalars_broadcast_per_level() -> None:
    sheet = parse(
        "[topology]\nsub = [2, 3]\nclients = 4\nworkers = 2\ncluster_epochs = [7, 2, 1]\n"
    )
    topo = sheet.topology
    assert topo.clients == (0, 0, 4)
    assert topo.workers == (2, 2, 2)
    assert topo.cluster_epochs == (1, 2, 1)  # level 0 is always 1
    specs = sheet.tree()
    assert len(specs) == 1 + 2 + 6
    assert len(leaf_client_slots(specs)) == 24
    assert specs[1].name == "demo#0" and specs[1].cluster_epochs == 2
    assert specs[2].name == "demo#0_0"


def test_examples_parse() -> None:
    digits = load_sheet(EXAMPLES / "digits.toml")
    assert digits.name == "digits"
    specs = digits.tree()
    assert [s.name for s in specs] == ["digits", "digits#0", "digits#1"]
    assert [len(s.workers) for s in specs] == [3, 3, 3]
    assert [len(s.clients) for s in specs] == [0, 3, 3]
    assert (digits.data.partition, digits.data.alpha) == ("dirichlet", 0.5)

    three = load_sheet(EXAMPLES / "three_level.toml")
    assert three.name == "three"
    names = [s.name for s in three.tree()]
    assert names == [
        "three",
        "three#0",
        "three#0_0",
        "three#0_1",
        "three#1",
        "three#1_0",
        "three#1_1",
    ]
    assert all(len(s.workers) == 2 for s in three.tree())
    assert len(leaf_client_slots(three.tree())) == 8


@pytest.mark.parametrize(
    "sheet",
    [
        default_sheet("d"),
        default_sheet("deep", sub=3, depth=2, clients=2, workers=1, rounds=2),
        load_sheet(EXAMPLES / "digits.toml"),
        load_sheet(EXAMPLES / "three_level.toml"),
    ],
    ids=["default", "deep", "digits", "three"],
)
def test_json_round_trips_exactly(sheet: JobSheet) -> None:
    text = sheet.to_json()
    again = JobSheet.from_json(text)
    assert again == sheet
    assert again.to_json() == text
    assert " " not in text  # canonical: no spaces


def test_json_keeps_kwargs_and_integer_floats() -> None:
    sheet = parse(
        '[model]\nname = "pkg.mod:make"\nkwargs = { width = 8, act = "relu", drop = [0.1] }\n'
        "[training]\nlr = 1\n"
    )
    assert sheet.training.lr == 1.0 and isinstance(sheet.training.lr, float)
    again = JobSheet.from_json(sheet.to_json())
    assert again == sheet
    assert again.model.kwargs == {"width": 8, "act": "relu", "drop": [0.1]}


def test_from_json_validates_again() -> None:
    doc = default_sheet("d").to_json().replace('"lr":0.1', '"lr":-1')
    with pytest.raises(BadInput, match=r"\[training\]\.lr must be a positive number, got -1"):
        JobSheet.from_json(doc)
    with pytest.raises(BadInput, match="not valid JSON"):
        JobSheet.from_json("{nope")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[training]\nlr = -1\n", "[training].lr must be a positive number, got -1"),
        ("keep_checkpoints = 1\n", "[job].keep_checkpoints must be true or false, got 1"),
        ("evaluate_every = -1\n", "[job].evaluate_every must be an integer >= 0, got -1"),
        ("[training]\nlr = nan\n", "[training].lr must be a positive number, got NaN"),
        ('[training]\nlr = "fast"\n', '[training].lr must be a positive number, got "fast"'),
        ("[training]\nmomentum = 1.0\n", "[training].momentum must be a number in [0, 1), got 1.0"),
        ("[training]\nbatch_size = 0\n", "[training].batch_size must be an integer between 1"),
        ("[training]\nlocal_epochs = 1.5\n", "[training].local_epochs must be an integer"),
        ('[training]\noptimizer = "adma"\n', '[training].optimizer must be one of "sgd" | "adam"'),
        ('[aggregation]\nrule = "mean"\n', "[aggregation].rule must be one of"),
        ("[aggregation]\ntrim = 0.5\n", "[aggregation].trim must be a number in [0, 0.5), got 0.5"),
        ("[data]\ntest_fraction = 1\n", "[data].test_fraction must be a number from 0.01 to 0.9"),
        ('[data]\npartition = "noniid"\n', '[data].partition must be one of "iid"'),
        ("[data]\nalpha = 0\n", "[data].alpha must be a positive number, got 0"),
        ("[data]\nshards_per_client = 0\n", "[data].shards_per_client must be an integer"),
        ("[data]\nn_classes = -3\n", "[data].n_classes must be an integer >= 0, got -3"),
        ('[data]\ndataset = "mnist"\n', '[data].dataset must be "digits" or a path ending in'),
        ('[model]\nname = "resnet"\n', '[model].name must be "mlp" or "package.module:factory"'),
        ("[model]\nhidden = 64\n", "[model].hidden must be a list of integers >= 1, got 64"),
        ("[model]\nkwargs = 3\n", "[model].kwargs must be a table of keyword arguments, got 3"),
        ("[model]\nkwargs = { n_classes = 3 }\n", "[model].kwargs must not set n_classes"),
        ("[topology]\nsub = 2\n", "[topology].sub must be a list of integers >= 1, got 2"),
        ("[topology]\nsub = [2, 0]\n", "[topology].sub must be a list of integers >= 1"),
        ("[topology]\nsub = [2]\nclients = [3]\n", "[topology].clients needs 2 values"),
        ("[topology]\nsub = [2]\nclients = [3, 0]\n", "[topology].clients must give each leaf"),
        ("[topology]\nworkers = 0\n", "[topology].workers must be a list of integers >= 1"),
        ("[topology]\nsub = [2]\ncluster_epochs = [1, 0]\n", "[topology].cluster_epochs must"),
        ("[topology]\nsub = [100, 100]\n", "[topology].sub describes 10101 clusters"),
        ("", None),  # control: the minimal sheet is fine
    ],
)
def test_malformed_field_names_sheet_field_and_value(extra: str, expected: str | None) -> None:
    if expected is None:
        parse(extra)
        return
    with pytest.raises(BadInput) as info:
        parse(extra, source="examples/x.toml")
    message = str(info.value)
    assert message.startswith("job sheet examples/x.toml: "), message
    assert expected in message, message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[job]\nname = "a#1"\n', "[job].name: job name 'a#1' is not valid"),
        ("[job]\nname = 7\n", "[job].name must be a string, got 7"),
        ('[job]\nname = "a"\nrounds = 0\n', "[job].rounds must be an integer between 1"),
        ('[job]\nname = "a"\nseed = -1\n', "[job].seed must be an integer >= 0, got -1"),
        ("[job]\nrounds = 3\n", "[job].name is required"),
        ("[data]\nalpha = 1.0\n", "the [job] section is required"),
        ('name = "a"\n', "key name must be inside a section (did you mean [job].name?)"),
        (
            '[job]\nname = "a"\n[training]\nlrate = 0.1\n',
            "unknown key [training].lrate (did you mean [training].lr?)",
        ),
        (
            '[job]\nname = "a"\n[trainig]\nlr = 0.1\n',
            "unknown section [trainig] (did you mean [training]?)",
        ),
        ('[job]\nname = "a"\nround = 3\n', "unknown key [job].round (did you mean [job].rounds?)"),
        ('[job]\nname = "a"\n[topology]\nxyz = 1\n', "valid keys in [topology]: sub, clients"),
        ('[job]\nname = "a"\ntraining = 3\n', "unknown key [job].training"),
        ('[job]\nname = "a"\n[data]\ndataset = "digit"\n', '(did you mean "digits"?)'),
    ],
)
def test_structure_errors(text: str, expected: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_sheet(text, source="s.toml")
    assert str(info.value).startswith("job sheet s.toml: ")
    assert expected in str(info.value), str(info.value)


def test_toml_syntax_error_gives_line_and_column() -> None:
    with pytest.raises(BadInput, match=r"job sheet s\.toml: invalid TOML: .*line 2, column"):
        parse_sheet('[job]\nname = "a\n', source="s.toml")


def test_relative_dataset_path_is_relative_to_the_sheet(tmp_path: Path) -> None:
    sub = tmp_path / "jobs"
    sub.mkdir()
    sheet_file = sub / "s.toml"
    sheet_file.write_text(MINIMAL + '[data]\ndataset = "../data/train.csv"\n')
    assert load_sheet(sheet_file).data.dataset == str((tmp_path / "data" / "train.csv").resolve())
    absolute = tmp_path / "x.npz"
    sheet_file.write_text(MINIMAL + f'[data]\ndataset = "{absolute}"\n')
    assert load_sheet(sheet_file).data.dataset == str(absolute)
    # without a base directory the path is kept as written
    assert parse('[data]\ndataset = "d.csv"\n').data.dataset == "d.csv"


def test_load_sheet_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="file not found"):
        load_sheet(tmp_path / "nope.toml")


def test_default_sheet_is_uniform() -> None:
    sheet = default_sheet("job", sub=2, depth=2, clients=3, workers=2, rounds=4)
    specs = sheet.tree()
    assert sheet.rounds == 4
    assert len(specs) == 7
    assert all(len(s.workers) == 2 for s in specs)
    assert [len(s.clients) for s in specs if not s.children] == [3, 3, 3, 3]
    assert all(not s.clients for s in specs if s.children)
    flat = default_sheet("flat", depth=0, clients=4)
    assert [len(s.clients) for s in flat.tree()] == [4]


def test_with_overrides() -> None:
    sheet = load_sheet(EXAMPLES / "digits.toml")
    renamed = sheet.with_overrides(name="other", rounds=2)
    assert (renamed.name, renamed.rounds) == ("other", 2)
    assert renamed.training == sheet.training and renamed.data == sheet.data
    deeper = sheet.with_overrides(sub=[2, 2])
    assert deeper.topology.clients == (0, 0, 3)
    assert deeper.topology.workers == (3, 3, 3)
    assert len(deeper.tree()) == 7
    assert deeper.tolerance.round_timeout == (0.0, 0.0, 0.0)  # one per level, as topology
    flat = sheet.with_overrides(sub=[], clients=5, workers=1)
    assert [len(s.clients) for s in flat.tree()] == [5]
    with pytest.raises(BadInput, match="cannot override 'round' \\(did you mean 'rounds'\\?\\)"):
        sheet.with_overrides(round=3)
    with pytest.raises(BadInput, match=r"\[job\]\.rounds must be an integer between 1"):
        sheet.with_overrides(rounds=0)


def test_sheet_is_frozen() -> None:
    sheet = default_sheet("d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sheet.rounds = 3  # type: ignore[misc]
    assert hash(sheet) == hash(JobSheet.from_json(sheet.to_json()))
