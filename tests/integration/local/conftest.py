from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest


def run_scanner(
    args: Sequence[str],
    *,
    timeout: float = 120,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """The `scanner` command exactly as a user runs it, as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def scanner() -> object:
    return run_scanner


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
