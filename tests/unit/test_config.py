from __future__ import annotations

from pathlib import Path

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


class _WithSecret(config.EngineConfig, frozen=True, kw_only=True):
    api_key: config.Secret


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


@pytest.mark.parametrize(
    ("text", "size"),
    [(4096, 4096), ("4096", 4096), ("10MB", 10**7), ("10 mb", 10**7), ("1.5GiB", 3 << 29), ("4GiB", 4 << 30)],
)
def test_byte_sizes(text: int | str, size: int) -> None:
    assert config.ByteSize.from_config(text) == size


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "-1", "10MB and more", "", -1, 1.5, True, [1]])
def test_bad_byte_sizes(text: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        config.ByteSize.from_config(text)


class _Shapes(config.EngineConfig, frozen=True, kw_only=True):
    url: config.HttpUrl = config.HttpUrl("https://example.com")
    names: tuple[str, ...] = ()
    count: int = 1
    flag: bool = False


def test_values_from_environment_strings_are_converted_and_frozen() -> None:
    model = config.validate_section(
        _Shapes, {"url": "http://h:8080/", "names": ["a"], "count": "3", "flag": "true"}, "engines.x"
    )
    assert (model.url, model.names, model.count, model.flag) == ("http://h:8080", ("a",), 3, True)
    with pytest.raises(AttributeError):
        model.count = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "ftp://h"}, "engines.x.url: must be an http:// or https:// URL"),
        ({"names": ["a", 1]}, "engines.x.names[1]: expected str, got int"),
        ({"count": {"a": 1}}, "engines.x.count: expected int, got table"),
        ({"nope": 1}, "engines.x.nope: unknown key"),
    ],
)
def test_errors_name_the_key_path(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.validate_section(_Shapes, table, "engines.x")
    assert str(info.value) == message


def test_a_missing_secret_is_named_and_a_secret_compares_by_value() -> None:
    with pytest.raises(ConfigError, match=r"engines\.x\.api_key: required key missing"):
        config.validate_section(_WithSecret, {}, "engines.x")
    assert config.Secret("abc") == config.Secret("abc") != config.Secret("abd")
    assert str(config.Secret("abc")) == "**********"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty"),
        ("key\nX-Injected: 1", "control character"),
        ("key\r", "control character"),
        ("\tkey", "control character"),
        ("key\x00", "control character"),
        ("key\x7f", "control character"),
        ("key\x85", "control character"),  # NEL, a C1 control
        ("key\u2028", "line separator"),
        ("key\u2029", "line separator"),
    ],
)
def test_an_empty_secret_or_one_with_a_control_character_is_a_config_error_naming_the_key(
    value: str, why: str
) -> None:
    """Never sent: an empty key only earns 401s (which get the address blocked), a newline breaks headers."""
    with pytest.raises(ConfigError) as info:
        config.validate_section(_WithSecret, {"api_key": value}, "engines.x")
    assert str(info.value).startswith("engines.x.api_key: ")
    assert why in str(info.value)
    assert "key\n" not in str(info.value) and "X-Injected" not in str(info.value)


def test_an_empty_key_from_the_environment_is_rejected_before_the_engine_is_built(tmp_path: Path) -> None:
    p = write(tmp_path, '[engines.metadefender]\napi_key = "${MDKEY}"\n')
    s = config.load(p, environ={"MDKEY": ""})
    with pytest.raises(ConfigError, match=r"engines\.metadefender\.api_key: empty"):
        engines.build("metadefender", s)
    s = config.load(p, environ={"MDKEY": "key\nX"})
    with pytest.raises(ConfigError, match=r"engines\.metadefender\.api_key: contains a control") as info:
        engines.build("metadefender", s)
    assert "key\nX" not in str(info.value)


@pytest.mark.parametrize("text", ["SEKRIT-${MDKEY2", "${", "a${1X}", "${MD-KEY}", "x${}y"])
def test_an_unclosed_or_invalid_interpolation_is_an_error_not_a_literal(tmp_path: Path, text: str) -> None:
    p = write(tmp_path, f'[engines.metadefender]\napi_key = "{text}"\n')
    with pytest.raises(ConfigError) as info:
        config.load(p, environ={"MDKEY2": "value", "MDKEY": "value"})
    assert str(info.value).startswith("engines.metadefender.api_key: '${' without a closing")
    assert "SEKRIT" not in str(info.value)


def test_a_literal_dollar_and_dollar_dollar_brace_still_pass() -> None:
    env = {"A": "1"}
    assert config.interpolate("p$ss $${A} ${A}$", env, "k") == "p$ss ${A} 1$"


@pytest.mark.parametrize(
    "value",
    ["pass\u00a0word", "emoji\U0001f468\u200d\U0001f469", "caf\u00e9", "soft\u00adhyphen", "\u3000wide"],
)
def test_a_secret_with_printable_but_unusual_characters_is_accepted(value: str) -> None:
    # str.isprintable() is false for these (no-break space, zero-width joiner, soft hyphen, ideographic
    # space): they used to be refused as control characters, yet a password may hold them
    model = config.validate_section(_WithSecret, {"api_key": value}, "engines.x")
    assert model.api_key.get_secret_value() == value
