"""Redis unreachable when a node starts: a clear error naming the URL, within 5 seconds."""

from __future__ import annotations

import subprocess
import sys
import time

from conftest import ROOT, node_env


def test_node_with_unreachable_redis_fails_fast_naming_the_url(hierfl_home):
    url = "redis://127.0.0.1:1"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "hierfl", "node", "--role", "client", "--redis", url],
        env=node_env(hierfl_home), cwd=ROOT, capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot reach Redis at {url}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 5, f"took {elapsed:.1f} s"
    print(f"\nunreachable: exit 1 after {elapsed:.2f} s: {result.stderr.strip()}")
