"""A real moto server for the S3 tests, reached through ``AWS_ENDPOINT_URL`` as a user reaches MinIO.

One ``moto_server`` process per test session on 127.0.0.1 and a free port; its request log goes to a
file, not to the test output. The environment (endpoint, ``testing`` credentials, us-east-1) is set
for the whole session so the code under test and ``python -m scanner`` subprocesses find the server
through the standard AWS chain, with no project-specific flag. Fixtures are small (moto does ~220
puts/s); each test module makes its own buckets.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _moto_command(port: int) -> list[str]:
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if exe is None:
        pytest.skip("moto_server not installed (uv sync --group dev)")
    return [exe, "-H", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(_moto_command(port), stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):  # noqa: S310 - our http URL
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start; log: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_PROFILE"):
                mp.delenv(var, raising=False)
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv("AWS_CONFIG_FILE", str(log.parent / "no-config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(log.parent / "no-credentials"))
            mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
            yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3(moto_endpoint: str) -> Any:
    """A plain boto3 client on the moto server, for arranging fixtures and reading results back."""
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def eicar() -> bytes:
    """The EICAR test string, assembled at run time so no file in the repository holds it."""
    return b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-" + b"ANTIVIRUS-TEST-FILE!$H+H*"


@pytest.fixture(scope="session")
def put_many(s3: Any) -> Callable[[str, dict[str, bytes]], None]:
    """PUT objects concurrently (moto is slow per request, not per byte)."""

    def put(bucket: str, objects: dict[str, bytes]) -> None:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))

    return put


def _load_stub() -> Any:
    """``benchmarks/s3_stub.py`` as a module, loaded once (other test modules may have loaded it)."""
    import importlib.util
    from pathlib import Path

    if "s3_stub" in sys.modules:
        return sys.modules["s3_stub"]
    path = Path(__file__).parents[3] / "benchmarks" / "s3_stub.py"
    spec = importlib.util.spec_from_file_location("s3_stub", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["s3_stub"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def s3_stub() -> Any:
    """The in-process S3 stub module (``StubBucket``, ``serve``)."""
    return _load_stub()


@pytest.fixture
async def stub_table(monkeypatch: pytest.MonkeyPatch, s3_stub: Any) -> AsyncIterator[Any]:
    """A factory: ``await stub_table(bucket, **s3)`` serves ``bucket`` on 127.0.0.1 and returns the
    ``[s3]`` table that points a source at it; the servers stop with the test."""
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var, value in (
        ("AWS_ACCESS_KEY_ID", "stub"),
        ("AWS_SECRET_ACCESS_KEY", "stub"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        monkeypatch.setenv(var, value)  # fmt: skip
    runners: list[Any] = []

    async def start(bucket: Any, **table: Any) -> dict[str, Any]:
        runner, port = await s3_stub.serve(bucket)
        runners.append(runner)
        return {"endpoint_url": f"http://127.0.0.1:{port}", **table}

    yield start
    for runner in runners:
        await runner.cleanup()
