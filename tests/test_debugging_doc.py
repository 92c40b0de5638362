"""docs/debugging.md is a real session: its script still runs end to end and records the same
commands, and the stuck client shows up where the page says it does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "capture_debugging.py"
DOC = ROOT / "docs" / "debugging.md"
#: The script takes well under a minute; this bound only stops a hung run.
RUN_TIMEOUT = 240


def commands(markdown: str) -> list[str]:
    """The commands of the session: the `$ ` lines of its console blocks."""
    return [line[2:] for line in markdown.splitlines() if line.startswith("$ ")]


@pytest.mark.e2e
def test_the_script_reproduces_the_committed_session(tmp_path, hierfl_home):
    out = tmp_path / "debugging.md"
    env = {k: v for k, v in os.environ.items() if k != "HIERFL_REDIS_URL"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"capture_debugging.py took {time.monotonic() - started:.1f} s")
    produced = out.read_text()
    assert commands(produced) == commands(DOC.read_text())
    assert len(commands(produced)) > 15
    # The stuck client, found three ways: explain, its members hash, the free slot list.
    assert "held up by: client c1 of demo#1 (status deployed — never started?)" in produced
    assert '1) "c0"\n2) "1"\n3) "c1"\n4) "0"' in produced
    assert '1) "demo#1/c1"' in produced
    assert "job demo: completed after 2 of 2 rounds; every node has exited" in produced


def test_the_committed_page_shows_the_stuck_client():
    page = DOC.read_text()
    assert "held up by: client c1 of demo#1 (status deployed — never started?)" in page
    assert "$ hierfl node --role client --cluster 'demo#1' --id c1" in page
