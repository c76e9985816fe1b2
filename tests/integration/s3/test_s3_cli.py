"""End to end: ``python -m scanner scan s3://...`` as a subprocess against moto, as an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

BUCKET, REPORTS = "e2e-data", "e2e-reports"


@pytest.fixture(scope="module")
def data(s3: Any, put_many: Callable[[str, dict[str, bytes]], None], eicar: bytes) -> dict[str, bytes]:
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=REPORTS)
    objects = {f"in/{i:03d}.txt": f"harmless {i}".encode() for i in range(120)}
    objects.update({
        "in/eicar.com": eicar,
        "in/nested/again/eicar copy ü.bin": b"prefix " + eicar,
        "in/folder/": b"",
        "in/a//b/../c": b"odd",
        "out/not-scanned.txt": b"outside the prefix",
    })  # fmt: skip
    put_many(BUCKET, objects)
    return objects


def scan(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--progress", "none", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
        check=False,
    )


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_scan_a_prefix_finds_eicar_and_writes_one_line_per_object(
    data: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "report.ndjson"
    run = scan(f"s3://{BUCKET}/in/", "--output", str(out))
    assert run.returncode == 1, run.stderr
    lines = records(out.read_text(encoding="utf-8"))
    expected = {f"s3://{BUCKET}/{k}" for k in data if k.startswith("in/")}
    assert Counter(r["target"] for r in lines) == Counter(expected)
    verdicts = {r["target"]: r for r in lines}
    for key in ("in/eicar.com", "in/nested/again/eicar copy ü.bin"):
        assert verdicts[f"s3://{BUCKET}/{key}"]["verdict"] == "infected"
        assert verdicts[f"s3://{BUCKET}/{key}"]["findings"]
    clean = [r for r in lines if r["verdict"] == "clean"]
    assert len(clean) == len(expected) - 2
    for r in lines:
        assert r["kind"] == "s3"
        assert r["etag"]
        assert r["size"] == len(data[r["target"].split("/", 3)[3]])


def test_output_to_s3_reads_back_like_a_file(data: dict[str, bytes], tmp_path: Path, s3: Any) -> None:
    run = scan(f"s3://{BUCKET}/in/", "--output", f"s3://{REPORTS}/nightly/report.ndjson")
    assert run.returncode == 1, run.stderr
    body = s3.get_object(Bucket=REPORTS, Key="nightly/report.ndjson")["Body"].read().decode()
    lines = records(body)
    assert len(lines) == sum(1 for k in data if k.startswith("in/"))
    assert {r["verdict"] for r in lines} == {"clean", "infected"}
    assert s3.list_multipart_uploads(Bucket=REPORTS).get("Uploads", []) == []


def test_modified_window_selects_nothing_or_everything(data: dict[str, bytes], tmp_path: Path) -> None:
    out = tmp_path / "none.ndjson"
    run = scan(f"s3://{BUCKET}/in/", "--modified-before", "1h", "--output", str(out))
    assert run.returncode == 0, run.stderr
    assert out.read_text() == ""
    run = scan(f"s3://{BUCKET}/in/", "--modified-since", "1h", "--include", "*.txt", "--output", str(out))
    assert run.returncode == 0, run.stderr
    assert len(records(out.read_text())) == 120


def test_all_versions_scans_old_infected_versions(s3: Any, eicar: bytes, tmp_path: Path) -> None:
    s3.create_bucket(Bucket="e2e-versions")
    s3.put_bucket_versioning(Bucket="e2e-versions", VersioningConfiguration={"Status": "Enabled"})
    bad = s3.put_object(Bucket="e2e-versions", Key="doc", Body=eicar)["VersionId"]
    s3.put_object(Bucket="e2e-versions", Key="doc", Body=b"cleaned up")
    s3.put_object(Bucket="e2e-versions", Key="gone", Body=b"x")
    s3.delete_object(Bucket="e2e-versions", Key="gone")
    out = tmp_path / "versions.ndjson"
    run = scan("s3://e2e-versions", "--all-versions", "--output", str(out))
    assert run.returncode == 1, run.stderr
    lines = records(out.read_text())
    assert len(lines) == 3  # two versions of doc, one of gone; no delete marker
    infected = [r for r in lines if r["verdict"] == "infected"]
    assert [(r["target"], r["version_id"]) for r in infected] == [("s3://e2e-versions/doc", bad)]
    run = scan("s3://e2e-versions", "--output", str(out))
    assert run.returncode == 0, run.stderr
    assert [r["target"] for r in records(out.read_text())] == ["s3://e2e-versions/doc"]


def test_missing_bucket_exits_2_with_one_clear_line(moto_endpoint: str, tmp_path: Path) -> None:
    run = scan("s3://e2e-no-such-bucket/x", "--output", str(tmp_path / "r.ndjson"))
    assert run.returncode == 2
    assert "e2e-no-such-bucket" in run.stderr
    assert "no such bucket" in run.stderr
    assert "Traceback" not in run.stderr


def test_endpoint_from_the_config_file(data: dict[str, bytes], tmp_path: Path, moto_endpoint: str) -> None:
    config = tmp_path / "scanner.toml"
    config.write_text(f'[s3]\nendpoint_url = "{moto_endpoint}"\nregion = "us-east-1"\nlist_concurrency = 2\n')
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    out = tmp_path / "r.ndjson"
    run = scan(f"s3://{BUCKET}/in/nested/", "--config", str(config), "--output", str(out), env=env)
    assert run.returncode == 1, run.stderr
    assert [r["verdict"] for r in records(out.read_text())] == ["infected"]


def test_inventory_source_from_the_command_line(s3: Any, eicar: bytes, tmp_path: Path) -> None:
    import gzip

    s3.create_bucket(Bucket="e2e-inv")
    s3.put_object(Bucket="e2e-inv", Key="a/eicar.com", Body=eicar)
    s3.put_object(Bucket="e2e-inv", Key="a/clean.txt", Body=b"fine")
    rows = "".join(f'"e2e-inv","{k}","{n}"\n' for k, n in (("a/eicar.com", len(eicar)), ("a/clean.txt", 4)))
    (tmp_path / "data.csv.gz").write_bytes(gzip.compress(rows.encode()))
    manifest = {
        "sourceBucket": "e2e-inv",
        "destinationBucket": "arn:aws:s3:::e2e-inv",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size",
        "files": [{"key": "inv/data.csv.gz", "size": 1}],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "r.ndjson"
    run = scan(f"inventory:{tmp_path / 'manifest.json'}", "--output", str(out))
    assert run.returncode == 1, run.stderr
    verdicts = {r["target"]: r["verdict"] for r in records(out.read_text())}
    assert verdicts == {"s3://e2e-inv/a/eicar.com": "infected", "s3://e2e-inv/a/clean.txt": "clean"}


def test_s3_targets_on_stdin_are_read_and_the_connection_closed(
    data: dict[str, bytes], tmp_path: Path
) -> None:
    lines = "".join(
        json.dumps({"kind": "s3", "target": f"s3://{BUCKET}/{key}"}) + "\n"
        for key in ("in/eicar.com", "in/000.txt", "in/vanished-before-read")
    )
    run = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", "-m", "scanner", "scan", "--progress", "none", "-"],
        input=lines, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    verdicts = {r["target"].rsplit("/", 1)[1]: r for r in records(run.stdout)}
    assert verdicts["eicar.com"]["verdict"] == "infected"
    assert verdicts["000.txt"]["verdict"] == "clean"
    assert verdicts["vanished-before-read"]["verdict"] == "error"
    assert verdicts["vanished-before-read"]["error"]["code"] == "vanished"
    assert "Unclosed" not in run.stderr


def test_an_interrupted_run_leaves_no_report_that_looks_complete(
    data: dict[str, bytes], tmp_path: Path, s3: Any
) -> None:
    import signal
    import time

    key = "interrupted/report.ndjson"
    proc = subprocess.Popen(
        [sys.executable, "-m", "scanner", "scan", "-", "--output", f"s3://{REPORTS}/{key}", "-q"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    for name in list(data)[:20]:
        proc.stdin.write(json.dumps({"kind": "s3", "target": f"s3://{BUCKET}/{name}"}).encode() + b"\n")
    proc.stdin.flush()  # stdin stays open: the run waits for more targets
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    listed = s3.list_objects_v2(Bucket=REPORTS, Prefix="interrupted/")
    assert listed.get("KeyCount", 0) == 0
    assert not s3.list_multipart_uploads(Bucket=REPORTS).get("Uploads")
