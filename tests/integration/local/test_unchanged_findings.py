"""A ``--skip-unchanged`` rerun names the earlier findings it skipped, so a quiet night (nothing
rescanned) is not read as a clean one.

It used to say only "7 unchanged": two of those were infected the night before and still are.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scanner.testing import eicar

from .conftest import run_scanner

pytestmark = pytest.mark.slow


def tree(root: Path) -> Path:
    for i in range(30):
        (root / "d" / f"clean-{i}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / "d" / f"clean-{i}.txt").write_bytes(b"harmless\n")
    (root / "d" / "eicar.com").write_bytes(eicar())
    (root / "d" / "again.com").write_bytes(b"x" + eicar())
    return root / "d"


@pytest.mark.parametrize("emit", [[], ["--emit-skipped"]])
def test_a_rerun_counts_the_earlier_findings_it_skipped_as_unchanged(tmp_path: Path, emit: list[str]) -> None:
    data = tree(tmp_path)
    state, out = str(tmp_path / "state.db"), str(tmp_path / "out.ndjson")
    first = run_scanner(["scan", str(data), "--state", state, "-o", out, "--progress", "none"])
    assert first.returncode == 1, first.stderr
    rerun = run_scanner(
        ["scan", str(data), "--state", state, "-o", out, "--progress", "none", "--skip-unchanged", *emit]
    )
    err = rerun.stderr.decode()
    assert "  found before and skipped as unchanged: 2 infected (--rescan-infected scans them again)" in err
    if not emit:
        assert "not rescanned: 32 unchanged" in err, err


def test_a_rerun_that_skipped_only_clean_targets_says_nothing_of_findings(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    for i in range(5):
        (data / f"c{i}").write_bytes(b"harmless\n")
    state, out = str(tmp_path / "state.db"), str(tmp_path / "out.ndjson")
    assert run_scanner(["scan", str(data), "--state", state, "-o", out]).returncode == 0
    rerun = run_scanner(["scan", str(data), "--state", state, "-o", out, "--skip-unchanged"])
    assert rerun.returncode == 0
    assert "found before" not in rerun.stderr.decode()
    assert re.search(r"not rescanned: 5 unchanged", rerun.stderr.decode())
