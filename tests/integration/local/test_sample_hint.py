"""``scanner sample`` ends with a hint: a command to try next. It must run as printed, in the shell
of a user who set the checkout up and has not installed anything (``scanner`` is not on PATH).

It used to print ``scanner scan DIR``, and the README ``uv run scanner ...``: neither ran there.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def without_the_venv_on_path() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    path = [p for p in path if not (Path(p) / "scanner").exists()]
    return {**os.environ, "PATH": os.pathsep.join(path)}


@pytest.mark.parametrize(
    "program", [[str(ROOT / ".venv" / "bin" / "scanner")], [sys.executable, "-m", "scanner"]]
)
def test_the_sample_hint_runs_as_printed(tmp_path: Path, program: list[str]) -> None:
    env = without_the_venv_on_path()
    made = subprocess.run(
        [*program, "sample", "sample"], cwd=tmp_path, env=env, capture_output=True, timeout=60, check=False
    )
    assert made.returncode == 0, made.stderr
    hint = re.search(r"try: (.*)$", made.stderr.decode().strip())
    assert hint is not None, made.stderr
    tried = subprocess.run(
        shlex.split(hint.group(1)), cwd=tmp_path, env=env, capture_output=True, timeout=60, check=False
    )
    assert tried.returncode == 1, tried.stderr  # the sample holds two EICAR test files
    assert len(tried.stdout.splitlines()) == 7
