"""A usage error names its real cause, not only the symptom argparse sees.

Regressions: ``scanner scan --state tree`` (the option took the source as its value) and
``scanner scan -leading-dash`` (a source that looks like an option) both said only "SOURCE
required".
"""

from __future__ import annotations

import pytest

from scanner import cli


def usage_error(capfd: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capfd.readouterr()
    assert cli.run(argv) == 2
    err = capfd.readouterr().err
    assert err.startswith("scanner: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["scan", "--state", "tree"], "SOURCE required (--state took 'tree' as its value?"),
        (["scan", "-q", "--state", "tree", "-v"], "SOURCE required (--state took 'tree' as its value?"),
        (["scan", "--output", "tree"], "SOURCE required (--output took 'tree' as its value?"),
        (["scan", "-o", "tree"], "SOURCE required (-o took 'tree' as its value?"),
    ],
)
def test_an_option_that_took_the_source_is_named(
    capfd: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    assert said in usage_error(capfd, argv)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["scan", "-leading-dash"],
            "unknown option -leading-dash (a source starting with '-' goes after '--'",
        ),
        (["scan", "--nope"], "unknown option --nope (a source starting with '-' goes after '--'"),
        (["scan", "tree", "-leading-dash"], "unknown option -leading-dash (a source starting with '-'"),
        (["scan", "tree", "--bogus", "-x"], "unknown options --bogus -x (a source starting with '-'"),
    ],
)
def test_a_source_that_looks_like_an_option_is_sent_after_double_dash(
    capfd: pytest.CaptureFixture[str], argv: list[str], said: str
) -> None:
    assert said in usage_error(capfd, argv)


def test_a_plain_missing_source_says_so(capfd: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capfd, ["scan", "-q"])
    assert "SOURCE required" in err and "took" not in err and "unknown option" not in err


def test_known_short_flags_and_values_are_not_taken_for_unknown_options(
    capfd: pytest.CaptureFixture[str],
) -> None:
    err = usage_error(capfd, ["scan", "-qv", "-j4", "--drain-timeout", "3", "--state"])
    assert "SOURCE required" in err and "unknown option" not in err and "took" not in err, err


def test_a_dash_source_after_double_dash_is_a_source(tmp_path: object) -> None:
    args = cli.build_parser().parse_args(["scan", "--", "-leading-dash"])
    assert args.sources == ["-leading-dash"]
