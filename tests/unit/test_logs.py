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
