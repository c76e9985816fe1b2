from __future__ import annotations

import logging

import pytest

from scanner import engines, logs
from scanner.config import Settings


def test_a_validated_config_registers_its_secrets_and_logs_never_show_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "md-SECRET-never-printed-42"
    engines.build("metadefender", Settings(engines={"metadefender": {"api_key": secret}}))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure(0)
    try:
        _log_with(secret)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "a third-party error echoed *** back" in err
    assert "boom with ***" in err
    assert secret not in err
    assert logs.redact(f"x {secret} y") == "x *** y"


def _log_with(secret: str) -> None:
    logging.getLogger("scanner.test").warning("a third-party error echoed %s back", secret)
    try:
        raise RuntimeError(f"boom with {secret}")
    except RuntimeError:
        logging.getLogger("scanner.test").exception("failed")


def test_debug_verbosity_never_lets_aws_library_debug_records_through(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "SESSION-TOKEN-from-the-environment-7"
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logs.QUIET_LIBRARIES}
    logs.configure(2)  # -vv
    try:
        logging.getLogger("botocore.auth").debug("CanonicalRequest: x-amz-security-token:%s", token)
        logging.getLogger("urllib3.connectionpool").debug("GET /?X-Amz-Signature=abc")
        logging.getLogger("botocore.credentials").warning("a warning that echoes %s", token)
        logging.getLogger("scanner.test").debug("our own debug line")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    err = capsys.readouterr().err
    assert "CanonicalRequest" not in err and "X-Amz-Signature" not in err
    assert "a warning that echoes ***" in err
    assert token not in err
    assert "our own debug line" in err
