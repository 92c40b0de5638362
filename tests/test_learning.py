"""Parameters, data, partitions, aggregation, models and a federated run without Redis."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hierfl.errors import BadInput, IntegrityError
from hierfl.jobtree import ClusterSpec, leaf_client_slots
from hierfl.learning import params as P
from hierfl.learning.aggregation import aggregate
from hierfl.learning.data import (
    decode_share,
    encode_share,
    load_dataset,
    partition,
    train_test_split,
)
from hierfl.learning.distributor import plan_dataset, sheet_with_data_shape
from hierfl.learning.evaluation import evaluate
from hierfl.learning.models import build_model
from hierfl.learning.training import derive_seed, train_local
from hierfl.sheet import DataConfig, JobSheet, ModelConfig, TrainingConfig, load_sheet

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def random_params(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "layer.weight": (rng.normal(size=(4, 3)) * scale).astype(np.float32),
        "layer.bias": (rng.normal(size=4) * scale).astype(np.float32),
        "scale": np.asarray(rng.normal(), dtype=np.float32),
    }


# --- params ----------------------------------------------------------------------------------


def test_to_bytes_is_deterministic_and_round_trips() -> None:
    params = random_params(0)
    reordered = {name: params[name] for name in reversed(list(params))}
    strided = dict(params, **{"layer.weight": np.asfortranarray(params["layer.weight"])})
    blob = P.to_bytes(params)
    assert P.to_bytes(reordered) == blob
    assert P.to_bytes(strided) == blob
    back = P.from_bytes(blob)
    assert list(back) == sorted(params)
    for name, value in params.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value)
    back["layer.bias"][0] = 1.0  # decoded arrays are ours to change
    assert P.digest(blob) == P.digest(P.to_bytes(params))
    assert len(P.digest(blob)) == 64


@pytest.mark.parametrize("blob", [b"", b"garbage", b"\x05\x00\x00\x00\x00\x00\x00\x00{}xxx"])
def test_from_bytes_refuses_malformed_blobs(blob: bytes) -> None:
    with pytest.raises(IntegrityError, match="malformed parameter blob"):
        P.from_bytes(blob)


def test_from_bytes_refuses_truncated_blob() -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        P.from_bytes(P.to_bytes(random_params(0))[:-4])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p.pop("layer.bias"), "tensor 'layer.bias' is missing"),
        (lambda p: p.update(extra=np.zeros(1, np.float32)), "tensor 'extra' is not expected"),
        (
            lambda p: p.update({"layer.weight": np.zeros((3, 4), np.float32)}),
            "tensor 'layer.weight' has shape [3, 4], expected [4, 3]",
        ),
        (
            lambda p: p.update({"layer.bias": np.zeros(4, np.float64)}),
            "tensor 'layer.bias' has dtype float64, expected float32",
        ),
        (
            lambda p: p["layer.weight"].__setitem__((0, 0), np.nan),
            "tensor 'layer.weight' has 1 non-finite value(s)",
        ),
        (
            lambda p: p["layer.bias"].__setitem__(1, np.inf),
            "tensor 'layer.bias' has 1 non-finite",
        ),
    ],
)
def test_check_like_names_the_bad_tensor(change, expected: str) -> None:
    reference = random_params(0)
    params = {k: v.copy() for k, v in random_params(1).items()}
    P.check_like(params, reference)
    change(params)
    with pytest.raises(IntegrityError) as info:
        P.check_like(params, reference)
    assert expected in str(info.value)


def test_model_params_round_trip() -> None:
    model = build_model(ModelConfig(hidden=(8,)), 5, 3, seed=1)
    other = build_model(ModelConfig(hidden=(8,)), 5, 3, seed=2)
    params = P.from_model(model)
    assert all(v.dtype == np.float32 for v in params.values())
    P.into_model(other, params)
    assert P.to_bytes(P.from_model(other)) == P.to_bytes(params)
    params["0.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(IntegrityError, match=r"'0\.weight' has shape"):
        P.into_model(other, params)


# --- aggregation -----------------------------------------------------------------------------

SUBMISSIONS = [
    ("c2", random_params(2), 30),
    ("c0", random_params(0), 10),
    ("c1", random_params(1), 60),
    ("w9", random_params(9, scale=50.0), 5),
]


@pytest.mark.parametrize("rule", ["fedavg", "median", "trimmed_mean"])
def test_aggregation_is_byte_identical_in_any_order(rule: str) -> None:
    blobs = {
        P.to_bytes(aggregate(list(order), rule=rule, trim=0.25))
        for order in itertools.permutations(SUBMISSIONS)
    }
    assert len(blobs) == 1


def test_fedavg_weights_by_sample_counts() -> None:
    result = aggregate(SUBMISSIONS)
    weights = np.array([w for _, _, w in SUBMISSIONS], dtype=np.float64)
    for name in result:
        stack = np.stack([p[name].astype(np.float64) for _, p, _ in SUBMISSIONS])
        expected = np.tensordot(weights, stack, axes=1) / weights.sum()
        assert result[name].dtype == np.float32
        np.testing.assert_allclose(result[name], expected, rtol=1e-6)
    two = aggregate(
        [("a", {"x": np.array([0.0], np.float32)}, 1), ("b", {"x": np.array([4.0], np.float32)}, 3)]
    )
    assert two["x"].tolist() == [3.0]


def test_fedavg_is_the_sequential_float64_sum_bit_for_bit() -> None:
    """Workers of different hierfl versions must agree: FedAvg stays sum(w * x) in float64,
    member by member in id order, divided by sum(w), cast back, whatever buffers it uses."""
    ordered = sorted(SUBMISSIONS)
    with_ints = [(m, {**p, "steps": np.array([i * 7, 3], np.int64)}, w)
                 for i, (m, p, w) in enumerate(ordered)]
    result = aggregate(with_ints)
    for name in result:
        total = np.zeros(result[name].shape, np.float64)
        for _, p, w in with_ints:
            total = total + float(w) * p[name].astype(np.float64)
        mean = total / float(sum(w for _, _, w in with_ints))
        if name == "steps":
            mean = np.rint(mean)
        expected = mean.astype(result[name].dtype)
        assert result[name].tobytes() == expected.tobytes(), name


def test_median_and_trimmed_mean_match_numpy() -> None:
    stacks = {
        n: np.stack([p[n] for _, p, _ in SUBMISSIONS]).astype(np.float64) for n in SUBMISSIONS[0][1]
    }
    median = aggregate(SUBMISSIONS, rule="median")
    trimmed = aggregate(SUBMISSIONS, rule="trimmed_mean", trim=0.25)
    untrimmed = aggregate(SUBMISSIONS, rule="trimmed_mean", trim=0.0)
    for name, stack in stacks.items():
        np.testing.assert_allclose(median[name], np.median(stack, axis=0), rtol=1e-6)
        np.testing.assert_allclose(
            trimmed[name], np.sort(stack, axis=0)[1:3].mean(axis=0), rtol=1e-6
        )
        np.testing.assert_allclose(untrimmed[name], stack.mean(axis=0), rtol=1e-6)


@pytest.mark.parametrize(
    ("submissions", "error", "expected"),
    [
        ([], BadInput, "no submissions"),
        ([("a", random_params(0), 0)], BadInput, "member a: weight"),
        ([("a", random_params(0), -3)], BadInput, "must be positive"),
        ([("a", random_params(0), True)], BadInput, "must be positive"),
        ([("a", random_params(0), 1), ("a", random_params(1), 1)], BadInput, "more than once"),
        (
            [("a", random_params(0), 1), ("b", {**random_params(1), "scale": np.zeros(2)}, 1)],
            IntegrityError,
            "member b: tensor 'scale' has shape [2], expected []",
        ),
        (
            [("a", random_params(0), 1), ("b", {"layer.bias": np.zeros(4, np.float32)}, 1)],
            IntegrityError,
            "member b: tensor 'layer.weight' is missing",
        ),
    ],
)
def test_aggregation_refuses_bad_submissions(submissions, error, expected: str) -> None:
    with pytest.raises(error) as info:
        aggregate(submissions)
    assert expected in str(info.value)


def test_aggregation_refuses_unknown_rule() -> None:
    with pytest.raises(BadInput, match="not one of"):
        aggregate(SUBMISSIONS, rule="mean")


# --- data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return load_dataset(DataConfig())


def test_digits_dataset(digits) -> None:
    x, y = digits
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert sorted(np.unique(y).tolist()) == list(range(10))


def test_split_is_stratified_and_deterministic(digits) -> None:
    x, y = digits
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, 0.2, seed=0)
    assert len(y_tr) + len(y_te) == len(y)
    assert abs(len(y_te) - 0.2 * len(y)) <= 10
    for label in range(10):
        assert abs((y_te == label).mean() - (y == label).mean()) < 0.01
    again = train_test_split(x, y, 0.2, seed=0)
    assert np.array_equal(again[3], y_te) and np.array_equal(again[2], x_te)
    rows = {row.tobytes() for row in x_tr}
    assert sum(row.tobytes() in rows for row in x_te) < 5  # (a few digits images are duplicates)


def label_skew(y: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each part's label mix and the whole set's."""
    overall = np.bincount(y, minlength=10) / len(y)
    return float(
        np.mean(
            [0.5 * np.abs(np.bincount(y[p], minlength=10) / len(p) - overall).sum() for p in parts]
        )
    )


@pytest.mark.parametrize(
    "cfg",
    [
        DataConfig(partition="iid"),
        DataConfig(partition="dirichlet", alpha=0.5),
        DataConfig(partition="dirichlet", alpha=0.01),
        DataConfig(partition="shards", shards_per_client=2),
    ],
    ids=["iid", "dirichlet", "dirichlet-extreme", "shards"],
)
@pytest.mark.parametrize("n_parts", [1, 6, 40])
def test_partitions_are_disjoint_covering_non_empty(digits, cfg: DataConfig, n_parts: int) -> None:
    _, y = digits
    parts = partition(y, n_parts, cfg, seed=3)
    assert len(parts) == n_parts
    assert all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(joined) == len(y) and np.array_equal(np.sort(joined), np.arange(len(y)))
    again = partition(y, n_parts, cfg, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    if cfg.partition == "dirichlet" and n_parts > 1:
        assert min(len(p) for p in parts) >= min(10, len(y) // (2 * n_parts))


def test_dirichlet_and_shards_are_skewed(digits) -> None:
    _, y = digits
    iid = label_skew(y, partition(y, 6, DataConfig(partition="iid"), seed=0))
    mild = label_skew(y, partition(y, 6, DataConfig(alpha=0.5), seed=0))
    strong = label_skew(y, partition(y, 6, DataConfig(alpha=0.05), seed=0))
    assert iid < 0.1 < mild < strong
    shards = partition(y, 10, DataConfig(partition="shards", shards_per_client=2), seed=0)
    assert all(len(np.unique(y[p])) <= 4 for p in shards)
    assert (
        partition(y, 6, DataConfig(), seed=1)[0].tolist()
        != partition(y, 6, DataConfig(), seed=0)[0].tolist()
    )


def test_partition_refuses_impossible_requests() -> None:
    y = np.arange(5) % 2
    with pytest.raises(BadInput, match="5 training samples cannot be shared by 6 clients"):
        partition(y, 6, DataConfig(partition="iid"), seed=0)
    with pytest.raises(BadInput, match="cannot be cut into 6 shards"):
        partition(y, 3, DataConfig(partition="shards"), seed=0)
    with pytest.raises(BadInput, match="over 0 clients"):
        partition(y, 0, DataConfig(), seed=0)


def test_share_round_trip() -> None:
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    y = np.array([0, 1, 1, 2])
    x2, y2 = decode_share(encode_share(x, y))
    assert x2.dtype == np.float32 and y2.dtype == np.int64
    assert np.array_equal(x2, x) and np.array_equal(y2, y)
    with pytest.raises(IntegrityError, match="must hold tensors 'x' and 'y'"):
        decode_share(P.to_bytes(random_params(0)))


def test_npz_and_csv_datasets(tmp_path: Path) -> None:
    x = np.arange(20, dtype=np.float64).reshape(5, 2, 2)
    y = np.array([0, 1, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    x2, y2 = load_dataset(DataConfig(dataset=str(tmp_path / "d.npz")))
    assert x2.shape == (5, 4) and x2.dtype == np.float32 and y2.tolist() == y.tolist()
    np.savez(tmp_path / "bad.npz", features=x)
    with pytest.raises(BadInput, match="missing array\\(s\\) x, y"):
        load_dataset(DataConfig(dataset=str(tmp_path / "bad.npz")))

    (tmp_path / "d.csv").write_text("a,b,label\n0.5,1,0\n2,3,1\n4,5,1\n")
    x3, y3 = load_dataset(DataConfig(dataset=str(tmp_path / "d.csv")))
    assert x3.tolist() == [[0.5, 1], [2, 3], [4, 5]] and y3.tolist() == [0, 1, 1]
    (tmp_path / "one.csv").write_text("1\n2\n")
    with pytest.raises(BadInput, match="needs at least 2 columns"):
        load_dataset(DataConfig(dataset=str(tmp_path / "one.csv")))
    (tmp_path / "ragged.csv").write_text("1,2,0\n3,1\n")
    with pytest.raises(BadInput, match="data row 2 has 2 columns, expected 3"):
        load_dataset(DataConfig(dataset=str(tmp_path / "ragged.csv")))
    (tmp_path / "frac.csv").write_text("1,2,0.5\n")
    with pytest.raises(BadInput, match="labels must be non-negative integers"):
        load_dataset(DataConfig(dataset=str(tmp_path / "frac.csv")))
    with pytest.raises(BadInput, match="file not found"):
        load_dataset(DataConfig(dataset=str(tmp_path / "missing.csv")))


def test_plan_dataset_over_example_tree() -> None:
    sheet = load_sheet(EXAMPLES / "digits.toml")
    slots = leaf_client_slots(sheet.tree())
    plan = plan_dataset(sheet, slots)
    assert list(plan.shares) == slots
    assert (plan.n_features, plan.n_classes) == (64, 10)
    sizes = [len(decode_share(blob)[1]) for blob in plan.shares.values()]
    x_test, _ = decode_share(plan.test)
    assert sum(sizes) + len(x_test) == 1797
    assert all(sz >= 100 for sz in sizes)
    assert plan_dataset(sheet, slots).shares == plan.shares  # deterministic bytes
    shaped = sheet_with_data_shape(sheet, plan)
    assert (shaped.data.n_features, shaped.data.n_classes) == (64, 10)
    assert JobSheet.from_json(shaped.to_json()) == shaped
    with pytest.raises(BadInput, match=r"\[data\]\.n_classes = 7, but dataset digits has 10"):
        plan_dataset(replace(sheet, data=replace(sheet.data, n_classes=7)), slots)
    with pytest.raises(BadInput, match="not unique"):
        plan_dataset(sheet, [slots[0], slots[0]])


# --- models, training, evaluation ------------------------------------------------------------


def tiny_factory(n_features: int, n_classes: int, width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, width), nn.Tanh(), nn.Linear(width, n_classes))


def not_a_module(n_features: int, n_classes: int) -> str:
    return "nope"


def test_build_model_is_deterministic_and_leaves_global_rng_alone() -> None:
    cfg = ModelConfig(hidden=(16, 8))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = P.to_bytes(P.from_model(build_model(cfg, 64, 10, seed=5)))
    assert torch.equal(torch.rand(1), before)
    assert P.to_bytes(P.from_model(build_model(cfg, 64, 10, seed=5))) == a
    assert P.to_bytes(P.from_model(build_model(cfg, 64, 10, seed=6))) != a
    names = sorted(P.from_model(build_model(cfg, 64, 10, seed=5)))
    assert names == ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    linear = build_model(ModelConfig(hidden=()), 64, 10, seed=0)
    assert isinstance(linear, nn.Sequential) and len(linear) == 1


def test_build_model_from_factory() -> None:
    model = build_model(ModelConfig(name=f"{__name__}:tiny_factory", kwargs={"width": 3}), 5, 2, 0)
    assert model[0].out_features == 3
    cases = [
        (f"{__name__}:not_a_module", "returned a str, not a torch.nn.Module"),
        ("no_such_module_xyz:make", "cannot import the factory"),
        (f"{__name__}:missing", "cannot import the factory"),
    ]
    for name, expected in cases:
        with pytest.raises(BadInput, match=expected):
            build_model(ModelConfig(name=name), 5, 2, 0)
    with pytest.raises(BadInput, match="calling the factory"):
        build_model(ModelConfig(name=f"{__name__}:tiny_factory", kwargs={"depth": 2}), 5, 2, 0)
    with pytest.raises(BadInput, match="data shape unknown"):
        build_model(ModelConfig(), 0, 0, 0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_is_deterministic_for_a_seed(digits, optimizer: str) -> None:
    x, y = digits[0][:300], digits[1][:300]
    cfg = TrainingConfig(optimizer=optimizer, lr=0.01 if optimizer == "adam" else 0.1)
    results = []
    for seed in (7, 7, 8):
        model = build_model(ModelConfig(hidden=(16,)), 64, 10, seed=0)
        loss = train_local(model, x, y, cfg, seed=seed)
        results.append((loss, P.to_bytes(P.from_model(model))))
    assert results[0] == results[1]
    assert results[0][1] != results[2][1]
    assert 0 < results[0][0] < 3
    with pytest.raises(BadInput, match="cannot train on 0 samples"):
        train_local(build_model(ModelConfig(), 64, 10, 0), x[:0], y[:0], cfg, seed=0)


def test_evaluate_returns_accuracy_and_loss(digits) -> None:
    x, y = digits
    model = build_model(ModelConfig(), 64, 10, seed=0)
    model.train()
    accuracy, loss = evaluate(model, x, y)
    assert 0.0 <= accuracy <= 0.3 and loss > 1.5  # untrained: near chance
    assert model.training  # mode restored


def test_centralised_mlp_reaches_095(digits) -> None:
    x, y = digits
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, 0.2, seed=0)
    model = build_model(ModelConfig(hidden=(64,)), 64, 10, seed=0)
    train_local(model, x_tr, y_tr, TrainingConfig(lr=0.1, momentum=0.9, local_epochs=20), seed=0)
    accuracy, _ = evaluate(model, x_te, y_te)
    assert accuracy >= 0.95


# --- a hierarchical federated run without Redis ----------------------------------------------


def run_federated(sheet: JobSheet) -> list[float]:
    """Simulate the tree: each cluster runs its clients and sub-clusters for ``cluster_epochs``
    local rounds (FedAvg after each), and uploads with weight = samples under it."""
    specs = {spec.name: spec for spec in sheet.tree()}
    plan = plan_dataset(sheet, leaf_client_slots(list(specs.values())))
    sheet = sheet_with_data_shape(sheet, plan)
    shares = {slot: decode_share(blob) for slot, blob in plan.shares.items()}
    model = build_model(sheet.model, plan.n_features, plan.n_classes, sheet.seed)

    def run_cluster(spec: ClusterSpec, start: P.Params, round_: int) -> tuple[P.Params, int]:
        params, samples = start, 0
        for epoch in range(spec.cluster_epochs):
            submissions = []
            for client in spec.clients:
                x, y = shares[(spec.name, client)]
                P.into_model(model, params)
                seed = derive_seed(sheet.seed, spec.name, client, round_, epoch)
                train_local(model, x, y, sheet.training, seed)
                submissions.append((client, P.from_model(model), len(y)))
            for child in spec.children:
                submissions.append((child, *run_cluster(specs[child], params, round_)))
            params = aggregate(submissions, sheet.aggregation.rule, sheet.aggregation.trim)
            samples = sum(n for _, _, n in submissions)
        return params, samples

    x_test, y_test = decode_share(plan.test)
    global_params, accuracies = P.from_model(model), []
    for round_ in range(sheet.rounds):
        global_params, _ = run_cluster(specs[sheet.name], global_params, round_)
        P.into_model(model, global_params)
        accuracies.append(evaluate(model, x_test, y_test)[0])
    return accuracies


def test_federated_digits_example_reaches_093() -> None:
    sheet = load_sheet(EXAMPLES / "digits.toml")
    accuracies = run_federated(sheet)
    assert len(accuracies) == sheet.rounds
    assert accuracies[-1] >= 0.93, accuracies
