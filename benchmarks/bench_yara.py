"""Embedded engine end to end: is ``scanner scan DIR`` at least as fast as a naive yara-x loop?

Question: wall time, files/s and MB/s of ``scanner scan DIR --output /dev/null -q`` run as a user
runs it (the console script next to this interpreter, as a subprocess; interpreter start, config,
rule compilation, worker processes, sha256 and NDJSON included) on

* 20,000 small files (1-4 KiB, two of them EICAR), and
* one 500 MB file (random bytes).

Baseline: the naive single-process loop a user would write instead, also a fresh interpreter:
``os.walk`` + ``yara_x.Scanner(rules).scan_file(path)`` with the same bundled rules
(``scanner/rules/builtin.yar``), no hashing, no output.

Goals (issue 2): files/s >= 1.0x baseline on the small files; MB/s >= 0.9x baseline on the large file.

Floor (a diagnostic): the sha256 of the large file alone, in a fresh interpreter. Every verdict line
carries the file's sha256 and SHA-256 cannot be split across cores, so baseline / floor is the most
any scanner that reports it can reach on the large file, whatever else it does.

Three rounds, each running every command once (so load on a shared machine hits both sides of a
ratio alike); the best run of each command counts (warm cache). The data sets are
built once under ``benchmarks/.work/`` (gitignored) and reused.

Run: ``.venv/bin/python benchmarks/bench_yara.py``
"""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _bytecode import compile_package

from scanner.testing import eicar

WORK = Path(__file__).resolve().parent / ".work"
SMALL = WORK / "yara-20k"
LARGE = WORK / "yara-500mb"
SMALL_FILES = 20_000
PER_DIR = 1_000
EICARS = 2
LARGE_BYTES = 500_000_000
RULES = Path(__file__).resolve().parent.parent / "scanner" / "rules" / "builtin.yar"
RUNS = 3
GOAL_FILES = 1.0
GOAL_MB = 0.9

# The naive baseline, run with ``python -c``; prints "files matches".
BASELINE = """
import os, sys, yara_x
rules = yara_x.compile(open(sys.argv[1], encoding="utf-8").read())
scanner = yara_x.Scanner(rules)
files = matches = 0
for root, _dirs, names in os.walk(sys.argv[2]):
    for name in names:
        files += 1
        matches += len(scanner.scan_file(os.path.join(root, name)).matching_rules)
print(files, matches)
"""


# A floor, not a baseline: the sha256 that every verdict line carries, alone, with nothing else.
HASH_ONLY = """
import hashlib, os, sys
for root, _dirs, names in os.walk(sys.argv[1]):
    for name in names:
        h = hashlib.sha256()
        with open(os.path.join(root, name), "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
"""


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    exit_code: int


# Data sets: built once, a marker written last.


def build_small() -> None:
    done = SMALL.with_suffix(".done")
    if done.exists():
        return
    rng = random.Random(2)
    for i in range(SMALL_FILES):
        d = SMALL / f"d{i // PER_DIR:02}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        body = eicar() if i < EICARS else rng.randbytes(rng.randint(1024, 4096))
        (d / f"f{i:05}.bin").write_bytes(body)
    done.write_text(f"{SMALL_FILES}\n")


def build_large() -> None:
    done = LARGE.with_suffix(".done")
    if done.exists():
        return
    LARGE.mkdir(parents=True, exist_ok=True)
    block = random.Random(5).randbytes(1 << 20)
    with open(LARGE / "large.bin", "wb") as f:
        left = LARGE_BYTES
        while left:
            n = f.write(block[: min(left, len(block))])
            left -= n
    done.write_text(f"{LARGE_BYTES}\n")


# The two commands.


def scanner_cmd(directory: Path) -> list[str]:
    script = Path(sys.executable).parent / "scanner"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "scanner"]
    return [*head, "scan", str(directory), "--output", os.devnull, "-q"]


def baseline_cmd(directory: Path) -> list[str]:
    return [sys.executable, "-c", BASELINE, str(RULES), str(directory)]


def hash_cmd(directory: Path) -> list[str]:
    return [sys.executable, "-c", HASH_ONLY, str(directory)]


def timed(cmd: list[str]) -> tuple[Run, str]:
    started = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if p.returncode not in (0, 1):
        raise SystemExit(f"{cmd[0]} exited {p.returncode}: {p.stderr.strip()}")
    return Run(seconds, p.returncode), p.stdout


def run_baseline(directory: Path, files: int, findings: int) -> float:
    run, out = timed(baseline_cmd(directory))
    if out.split() != [str(files), str(findings)]:
        raise SystemExit(f"baseline saw {out.strip()!r}, expected {files} files, {findings} matches")
    return run.seconds


def run_scanner(directory: Path, findings: int) -> float:
    run, _ = timed(scanner_cmd(directory))
    if run.exit_code != (1 if findings else 0):
        raise SystemExit(f"scanner exited {run.exit_code} on {directory}")
    return run.seconds


def measure_all() -> dict[str, float]:
    """Best wall seconds of each command over RUNS rounds; each round runs every command once, so
    a burst of load on the shared machine hits both sides of a ratio alike."""
    empty = WORK / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Callable[[], float]] = {
        "small_base": lambda: run_baseline(SMALL, SMALL_FILES, EICARS),
        "small_ours": lambda: run_scanner(SMALL, EICARS),
        "large_base": lambda: run_baseline(LARGE, 1, 0),
        "large_ours": lambda: run_scanner(LARGE, 0),
        "empty_ours": lambda: run_scanner(empty, 0),
        "large_hash": lambda: timed(hash_cmd(LARGE))[0].seconds,
    }
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(RUNS):
        for name, step in steps.items():
            best[name] = min(best[name], step())
    return best


def beyond(total: float, fixed: float, amount: float, unit: str) -> str:
    # The fixed cost is itself noisy: a difference within 10 % of it means nothing.
    extra = total - fixed
    return f"{amount / extra:,.0f} {unit}" if extra > 0.1 * fixed else f"n/a {unit} (within noise)"


def main() -> None:
    compile_package()
    build_small()
    build_large()
    t = measure_all()
    small_base, small_ours = t["small_base"], t["small_ours"]
    large_base, large_ours = t["large_base"], t["large_ours"]
    fixed = t["empty_ours"]
    mb = LARGE_BYTES / 1e6
    files_ratio = small_base / small_ours
    mb_ratio = large_base / large_ours
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()}")
    print(f"scanner command: {' '.join(scanner_cmd(Path('DIR')))}")
    print(f"{'data set':<26} {'baseline s':>10} {'scanner s':>10} {'baseline rate':>16} {'scanner rate':>16}")
    print(
        f"{'20,000 small files':<26} {small_base:>10.2f} {small_ours:>10.2f} "
        f"{SMALL_FILES / small_base:>10,.0f} files/s {SMALL_FILES / small_ours:>10,.0f} files/s"
    )
    print(
        f"{'one 500 MB file':<26} {large_base:>10.2f} {large_ours:>10.2f} "
        f"{mb / large_base:>13,.0f} MB/s {mb / large_ours:>13,.0f} MB/s"
    )
    print(f"scanner on an empty directory (fixed cost of a run): {fixed:.2f} s")
    print(
        f"scanner beyond that fixed cost: {beyond(small_ours, fixed, SMALL_FILES, 'files/s')}, "
        f"{beyond(large_ours, fixed, mb, 'MB/s')} (a diagnostic, not the goal's measure)"
    )
    hashed = t["large_hash"]
    print(
        f"floor: sha256 of the 500 MB file alone (fresh interpreter, 1 MiB reads) {hashed:.2f} s, so a run "
        f"whose verdict carries the sha256 reaches at most {large_base / hashed:.2f}x the baseline's MB/s "
        f"(goal {GOAL_MB}x) even with the hash on a core of its own"
    )
    ok = files_ratio >= GOAL_FILES and mb_ratio >= GOAL_MB
    print(
        f"RESULT bench_yara: small files {SMALL_FILES / small_ours:,.0f} files/s = {files_ratio:.2f}x "
        f"baseline (os.walk + scan_file {SMALL_FILES / small_base:,.0f} files/s), goal >= {GOAL_FILES}x; "
        f"500 MB file {mb / large_ours:,.0f} MB/s = {mb_ratio:.2f}x baseline ({mb / large_base:,.0f} MB/s), "
        f"goal >= {GOAL_MB}x; wall times include interpreter start -> {'PASS' if ok else 'MISS'}"
    )


if __name__ == "__main__":
    main()
