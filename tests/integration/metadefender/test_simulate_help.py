"""``scanner simulate --help`` and the README list every simulator option from the one OPTIONS table."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.cli import build_parser
from scanner.simulators import names, options

README = Path(__file__).resolve().parents[3] / "README.md"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _shown(default: object) -> str:
    return '""' if default == "" else str(default)


def test_help_lists_every_option_with_type_default_and_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["simulate", "--help"])
    assert done.value.code == 0
    text = _flat(capsys.readouterr().out)
    for vendor in names():
        assert f"{vendor} options (--set NAME=VALUE):" in text
        for name, (kind, default, meaning) in options(vendor).items():
            assert f"{name} {kind.__name__} default {_shown(default)} {_flat(meaning)}" in text, name
    assert "Daily quota:" in text
    assert "86400, a day, by default" in text


def test_readme_simulator_section_lists_every_option() -> None:
    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index("## Simulators") :]
    section = section[: section.index("\n## ", 1)]
    assert "Daily quota" in section
    for vendor in names():
        for name, (kind, default, meaning) in options(vendor).items():
            assert f"| `{name}` | {kind.__name__} | `{_shown(default)}` | {meaning} |" in section, name


def test_an_unknown_option_is_a_usage_error_naming_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from scanner.cli import run

    assert run(["simulate", "metadefender", "--set", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown simulator option 'nope'" in err and "prevention_limit" in err
