"""The docs show what the code does: generated diagrams stay equal to the command's output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hierfl.diagram import DiagramFormat, Which, render

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("machine", ["node", "cluster"])
def test_protocol_doc_diagrams_are_the_generated_ones(machine):
    text = (DOCS / "protocol.md").read_text()
    block = re.search(rf"<!-- generated: hierfl diagram --machine {machine} -->\n```mermaid\n"
                      r"(.*?)```", text, re.S)
    assert block, f"docs/protocol.md lacks the generated {machine} diagram"
    assert block.group(1).strip() == render(DiagramFormat.MERMAID, Which(machine)).strip()
