from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from scanner import config, engines
from scanner.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "scanner.toml"
    p.write_text(text)
    return p


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.toml")


def test_invalid_toml_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[engines.yara\n"))


def test_env_interpolation_and_escape(tmp_path: Path) -> None:
    p = write(tmp_path, '[engines.yara]\nrules = ["${RULES}/a.yar", "$${LITERAL}"]\n')
    s = config.load(p, environ={"RULES": "/r"})
    assert s.engine_table("yara")["rules"] == ["/r/a.yar", "${LITERAL}"]


def test_missing_env_var_names_key_and_variable(tmp_path: Path) -> None:
    p = write(tmp_path, '[engines.yara]\nspool_dir = "${SPOOL_DIR_UNSET}"\n')
    with pytest.raises(ConfigError) as info:
        config.load(p, environ={})
    assert "engines.yara.spool_dir" in str(info.value)
    assert "SPOOL_DIR_UNSET" in str(info.value)


def test_unknown_top_level_key_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'engine'"):
        config.load(write(tmp_path, "[engine.yara]\n"))


def test_unknown_engine_rejected(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, "[engines.nosuch]\nx = 1\n"))
    with pytest.raises(ConfigError, match="unknown engine 'nosuch'"):
        engines.validate_all(s)


def test_unknown_engine_key_rejected_with_its_path(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, "[engines.yara]\nbatch = 3\n"))
    with pytest.raises(ConfigError, match=r"engines\.yara\.batch: unknown key"):
        engines.validate_all(s)


def test_bad_value_names_key(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, '[engines.yara]\ntimeout = "soon"\n'))
    with pytest.raises(ConfigError, match=r"engines\.yara\.timeout"):
        engines.build("yara", s)


class _WithSecret(config.EngineConfig):
    api_key: pydantic.SecretStr


def test_secret_never_in_repr_or_error() -> None:
    model = config.validate_section(_WithSecret, {"api_key": "hunter2-very-secret"}, "engines.x")
    assert "hunter2" not in repr(model)
    assert "hunter2" not in str(model)
    with pytest.raises(ConfigError) as info:
        config.validate_section(_WithSecret, {"api_key": "hunter2-very-secret", "extra": 1}, "engines.x")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        config.validate_section(_WithSecret, {"api_key": ["hunter2-very-secret"]}, "engines.x")
    assert "hunter2" not in str(info.value)


def test_yara_size_accepts_units(tmp_path: Path) -> None:
    s = config.load(write(tmp_path, '[engines.yara]\nmax_file_size = "10MiB"\n'))
    engine = engines.build("yara", s)
    assert engine.max_size == 10 * 1024 * 1024
