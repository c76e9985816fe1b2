"""``-vv`` against a real S3 server: debug logging never shows AWS credentials.

botocore's own debug lines carry the canonical request, the signed headers and the
``x-amz-security-token``; the CLI keeps the AWS libraries at INFO at most, and registers the
environment's AWS secrets with the redactor as a backstop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.slow

BUCKET = "secret-logs"
TOKEN = "SESSIONTOKENSECRETxyz"
SECRET = "SECRETACCESSKEYabc123"


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="dir1/a.txt", Body=b"harmless")
    return BUCKET


@pytest.mark.parametrize("flags", [["-vv"], ["-vv", "--debug"], ["-v"], ["--debug"]])
def test_verbose_debug_logs_never_show_the_session_token_or_secret_key(bucket: str, flags: list[str]) -> None:
    env = {**os.environ, "AWS_SESSION_TOKEN": TOKEN, "AWS_SECRET_ACCESS_KEY": SECRET}
    run = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", f"s3://{bucket}/dir1/", "-o", os.devnull, *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert TOKEN not in run.stderr
    assert SECRET not in run.stderr
    assert "x-amz-security-token" not in run.stderr.lower()
    assert "CanonicalRequest" not in run.stderr
