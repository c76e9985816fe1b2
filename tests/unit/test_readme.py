"""What the README and ``--help`` promise an operator, held to what the code does.

Each claim here was once wrong: the Shutdown section promised exit 2 for an interrupted run that
had found something (it exits 1: a finding is never masked).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from scanner import cli
from scanner.pipeline import Summary

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def bullet(text: str, name: str) -> str:
    start = text.index(f"- **{name}.**")
    end = text.find("\n- ", start + 1)
    return text[start : end if end >= 0 else None]


def test_an_interrupted_run_with_a_finding_exits_1_in_code_and_in_every_text() -> None:
    summary = Summary(listed=3, written=1, elapsed=1.0, by_status={"infected": 1}, errors_by_code={},
                      interrupted=True)  # fmt: skip
    assert summary.exit_code == 1
    shutdown = " ".join(bullet(section("Resume and incremental rescans"), "Shutdown").split())
    assert re.search(r"exit status is 2 \(incomplete\), or \*\*1\*\* when it had found", shutdown), shutdown
    exit_status = " ".join(section("Exit status").split())
    assert "interrupted" in exit_status
    assert re.search(r"found something exits \*\*1\*\*[^.]*interrupted", exit_status)
    epilog = cli._SCAN_EXAMPLES
    assert re.search(r"1 +at least one target infected.*interrupted", epilog), epilog


@pytest.mark.parametrize("interrupted", [True, False])
def test_errors_alone_or_an_interrupt_alone_exit_2(interrupted: bool) -> None:
    summary = Summary(listed=3, written=3, elapsed=1.0, by_status={"clean": 2, "error": int(not interrupted)},
                      errors_by_code={}, interrupted=interrupted)  # fmt: skip
    assert summary.exit_code == 2


def setup_section() -> str:
    return section("Set up")


def test_the_set_up_section_shows_no_command_that_needs_uv_on_path() -> None:
    # uv lives in .tools/bin, which the scripts put on their own PATH only
    assert "uv run" not in setup_section()


def test_every_program_the_readme_runs_from_the_checkout_exists() -> None:
    root = README.parent
    text = README.read_text(encoding="utf-8")
    programs = set(re.findall(r"(?<![\w/.])((?:\./)?(?:scripts|\.venv/bin)/[\w-]+)", text))
    assert ".venv/bin/scanner" in programs
    for program in programs:
        assert (root / program).is_file() and os.access(root / program, os.X_OK), program
