"""The summary on stderr is read in cron logs: it must not be forgeable nor leak what a URL carries."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from scanner.testing import eicar

from .conftest import run_scanner


def test_a_file_name_cannot_forge_a_summary_line_or_send_escapes(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "evil\nscanner: 0 verdicts: none\x1b[31mRED").write_bytes(eicar())
    p = run_scanner(["scan", str(tree), "-o", str(tmp_path / "out.ndjson")])
    assert p.returncode == 1, p.stderr
    err = p.stderr.decode()
    assert "\x1b" not in err
    assert not any(line.startswith("scanner: 0 verdicts") for line in err.splitlines()), err
    assert "evil\\nscanner: 0 verdicts: none\\x1b[31mRED" in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_summary_keeps_url_credentials_and_queries_out_and_counts_the_errors_it_omits(
    tmp_path: Path,
) -> None:
    port = _closed_port()  # nothing listens: every URL fails to connect
    lines = [
        json.dumps({"kind": "url", "target": f"http://carol:PWcarol@127.0.0.1:{port}/f{i}?token=TOK{i}"})
        for i in range(14)
    ]
    p = run_scanner(["scan", "-", "-o", str(tmp_path / "out.ndjson")], input="\n".join(lines).encode())
    assert p.returncode == 2, p.stderr
    err = p.stderr.decode()
    assert "PWcarol" not in err and "TOK" not in err, err
    assert err.count("  error: ") == 10
    assert "... and 4 more errors in" in err
