"""configs/metadefender.toml stays valid, its values stay the defaults, and its secret stays in the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner import config, engines
from scanner.config import Secret
from scanner.engines.metadefender import Config
from scanner.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "configs" / "metadefender.toml"


def test_the_example_config_is_valid_and_holds_the_defaults() -> None:
    settings = config.load(EXAMPLE, environ={"METADEFENDER_API_KEY": "from-env-1234"})
    engines.validate_all(settings)
    engine = engines.build("metadefender", settings)
    built = engine.config  # type: ignore[attr-defined]
    assert built.api_key.get_secret_value() == "from-env-1234"
    defaults = Config(api_key=Secret("x"))
    for name in Config.__struct_fields__:
        if name != "api_key":
            assert getattr(built, name) == getattr(defaults, name), name
    assert "${METADEFENDER_API_KEY}" in EXAMPLE.read_text()


def test_a_missing_key_variable_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="METADEFENDER_API_KEY"):
        config.load(EXAMPLE, environ={})


def test_unknown_keys_and_bad_urls_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        config.validate_section(Config, {"api_key": "k", "apikey": "k"}, "engines.metadefender")
    with pytest.raises(ConfigError, match="base_url"):
        config.validate_section(Config, {"api_key": "k", "base_url": "ftp://x"}, "engines.metadefender")
