"""`hierfl events --follow` prints an event soon after the change that caused it.

The margin is generous (the machine is shared and noisy); the figure itself comes from
`python benchmarks/event_latency.py` (p50 under 1 ms here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "event_latency.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("event_latency", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_follow_prints_each_event_within_half_a_second(redis_url):
    latencies = load_benchmark().measure(redis_url, 10)
    assert len(latencies) == 10
    assert max(latencies) < 500, f"slowest event took {max(latencies):.0f} ms"
