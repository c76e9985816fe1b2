"""Bad input, fuzzed: malformed config files and values, SOURCE arguments and stdin NDJSON.

Each goes through :func:`scanner.cli.run` in this process, as ``scanner scan ...`` would, and must end
with exit status 2 and exactly one line on stderr that starts ``scanner: error:`` (a run that already
started also prints its summary, whose lines never start so), never a traceback. A malformed stdin
line is the exception: it is one ``error`` verdict line naming it, the other lines are scanned, and
the run still exits 2.

The SOURCE of the config and flag cases never exists, so a config or flag that happens to be valid
still ends in a one-line error before anything is scanned. The stdin cases swap the engine for an
in-memory one (the engine plays no part in reading stdin), so each example costs milliseconds.
"""

from __future__ import annotations

import io
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from scanner import cli, engines
from scanner.testing import ScriptedEngine

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MISSING = "no-such-source-dir"

#: what an argv element can hold: any text but NUL (the OS cannot pass one)
argv_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, no AWS endpoint that could be reached, no state home to touch."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state-home"))
    monkeypatch.delenv("SCANNER_TEST_UNSET", raising=False)
    return tmp_path


def run(capfd: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    capfd.readouterr()
    code = cli.run(argv)
    err = capfd.readouterr().err
    return code, err.splitlines()


def one_error_line(code: int, err: list[str], *, mentions: str = "") -> str:
    """Exit 2 and exactly one ``scanner: error:`` line (plus, at most, a run's summary lines)."""
    text = "\n".join(err)
    assert code == 2, text
    assert "Traceback" not in text and "internal error" not in text, text
    errors = [line for line in err if line.startswith("scanner: error: ")]
    assert len(errors) == 1, text
    summary = [line for line in err if line not in errors]
    assert all(line.startswith(("scanner: ", "  ")) for line in summary), text
    assert mentions in errors[0], text
    return errors[0]


# Config files.


def toml_key(key: str) -> str:
    return orjson.dumps(key).decode()  # a quoted key; JSON string escapes are TOML's


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return orjson.dumps(value).decode()


def toml_doc(doc: dict[str, dict[str, dict[str, Any]] | dict[str, Any]]) -> str:
    out = []
    for table, body in doc.items():
        if table == "engines":
            for name, keys in body.items():
                out.append(f"[engines.{toml_key(name)}]")
                out += [f"{toml_key(k)} = {toml_value(v)}" for k, v in keys.items()]
        else:
            out.append(f"[{toml_key(table)}]")
            out += [f"{toml_key(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


KNOWN_KEYS = [
    *("rules", "builtin_rules", "max_file_size", "timeout", "processes", "batch_size", "spool_dir"),
    *("base_url", "api_key", "connections", "jobs", "read_timeout", "retry_attempts", "poll_initial"),
    *("endpoint_url", "region", "max_pool_connections"),
]
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["${SCANNER_TEST_UNSET}", "$$", "${", "4GiB", "-1", "http://", "ftp://x", "0"]),
)
values = st.one_of(
    scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2)
)
tables = st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12)), values, max_size=4)
configs = st.fixed_dictionaries(
    {},
    optional={
        "engines": st.dictionaries(
            st.one_of(st.sampled_from(["yara", "metadefender"]), st.text(max_size=10)), tables, max_size=2
        ),
        "s3": tables,
    },
).map(toml_doc)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), configs.map(lambda doc: doc[: len(doc) // 2])))
@example(text="[engines.yara\n")
@example(text="engines = 3\n")
@example(text='[engines]\nyara = "x"\n')
@example(text="\x00")
def test_a_config_that_is_not_toml_is_one_line(
    sandbox: Path, capfd: pytest.CaptureFixture[str], text: str
) -> None:
    cfg = sandbox / "bad.toml"
    cfg.write_text(text, encoding="utf-8", errors="surrogatepass")
    code, err = run(capfd, ["scan", MISSING, "--config", str(cfg)])
    line = one_error_line(code, err)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assert "not valid TOML" in line


@FUZZ
@given(doc=configs)
@example(doc='[engines.yara]\ntimeout = "soon"\n')
@example(doc='[engines.yara]\n"a\\nb" = 1\n')
@example(doc='[engines."a\\nb"]\n')
@example(doc='[engines.metadefender]\nbase_url = "ftp://x"\napi_key = "${SCANNER_TEST_UNSET}"\n')
@example(doc="[s3]\nendpoint_url = 5\n")
def test_a_config_with_bad_tables_or_values_is_one_line(
    sandbox: Path, capfd: pytest.CaptureFixture[str], doc: str
) -> None:
    cfg = sandbox / "scanner.toml"
    cfg.write_text(doc, encoding="utf-8")
    code, err = run(capfd, ["scan", MISSING, "--config", str(cfg)])
    one_error_line(code, err)


def test_a_bad_value_names_its_key(sandbox: Path, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = sandbox / "scanner.toml"
    cfg.write_text('[engines.yara]\nmax_file_size = "lots"\n')
    code, err = run(capfd, ["scan", MISSING, "--config", str(cfg)])
    assert "engines.yara.max_file_size" in one_error_line(code, err)


# SOURCE arguments and flag values.

PREFIXES = ["", "s3://", "s3:///", "inventory:", "urls:", "sites:", "ftp://", "http://", "gs://", "file://"]


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), rest=argv_text)
@example(prefix="", rest="")
@example(prefix="s3://", rest="")
@example(prefix="inventory:", rest="")
@example(prefix="urls:", rest="")
def test_a_source_that_cannot_be_used_is_one_line(
    sandbox: Path, capfd: pytest.CaptureFixture[str], prefix: str, rest: str
) -> None:
    spec = prefix + rest
    assume(spec != "-")  # stdin: valid, tested below
    if prefix in ("", "inventory:"):
        assume(spec == prefix or not os.path.lexists(spec.removeprefix(prefix)))
    # a well-formed bucket name would be listed for real: only malformed S3 forms here
    for s3 in ("s3://", "inventory:s3://"):
        if spec.startswith(s3):
            assume(spec[len(s3) :].partition("/")[0] == "")
    code, err = run(capfd, ["scan", spec])
    one_error_line(code, err)


FLAGS = [
    "--jobs",
    "--min-size",
    "--max-size",
    "--modified-since",
    "--modified-before",
    "--rescan-after",
    "--cache-age",
    "--drain-timeout",
    "--progress",
    "--progress-interval",
    "--engine",
    "--output",
]


@FUZZ
@given(flag=st.sampled_from(FLAGS), value=argv_text)
@example(flag="--jobs", value="0")
@example(flag="--max-size", value="12 parsecs")
@example(flag="--rescan-after", value="7 fortnights")
@example(flag="--engine", value="clamav")
def test_a_bad_flag_value_is_one_line(
    sandbox: Path, capfd: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    assume(not value.startswith("-"))  # argparse would take it for the next option
    code, err = run(capfd, ["scan", MISSING, f"{flag}={value}"])
    one_error_line(code, err)


# stdin NDJSON.

good_lines = st.one_of(
    st.builds(lambda h: {"kind": "site", "target": h}, st.sampled_from(["example.com", "a.example.org"])),
    st.builds(lambda p: {"kind": "file", "target": p}, st.sampled_from(["/nonexistent/a", "rel/b.txt"])),
).map(lambda obj: orjson.dumps(obj))
ignored_lines = st.sampled_from([b"", b"   ", b"# a comment", b"  # indented comment", b"\t"])
ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON encoders take
json_values = st.recursive(
    st.none() | st.booleans() | ints | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _not_json(text: str) -> bool:
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return False
    try:
        orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return True
    return False


def _not_utf8(data: bytes) -> bool:
    try:
        (b"x" + data).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


bad_lines = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), min_size=1, max_size=30)
    .filter(_not_json)
    .map(str.encode),
    json_values.filter(lambda v: not isinstance(v, dict)).map(orjson.dumps),
    st.builds(
        lambda kind, target: orjson.dumps({"kind": kind, "target": target}),
        st.one_of(st.none(), ints, st.text(max_size=6)).filter(
            lambda k: k not in ("file", "s3", "url", "site")
        ),
        st.just("x"),
    ),
    st.builds(
        lambda kind, target: orjson.dumps({"kind": kind, "target": target}),
        st.sampled_from(["file", "s3", "url", "site"]),
        st.one_of(st.none(), ints, st.just(""), st.lists(st.text(max_size=3), max_size=2)),
    ),
    st.sampled_from([b'{"kind": "s3", "target": "s3://bucket-only"}', b'{"kind":"s3","target":"gs://b/k"}']),
    # one line: a newline inside would make it two, which the count below takes for one
    st.binary(min_size=1, max_size=8)
    .filter(lambda b: b"\n" not in b and _not_utf8(b))
    .map(lambda b: b"x" + b),
)


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "build", lambda name, settings: ScriptedEngine(name="yara"))


@FUZZ
@given(
    before=st.lists(st.one_of(good_lines, ignored_lines), max_size=6),
    bad=bad_lines,
    after=st.lists(st.one_of(good_lines, bad_lines, ignored_lines), max_size=4),
)
# a URL urllib cannot split used to raise in the reader and end the run as an internal error
@example(
    before=[b'{"kind": "file", "target": "/nonexistent/a"}'],
    bad=b'{"kind":"url","target":"http://[::1"}',
    after=[],
)
@example(
    before=[],
    bad=b'{"kind": "url", "target": "https://h:99999/"}',
    after=[b'{"kind":"site","target":"a.example.org"}'],
)
# a NUL byte in a path: it used to reach the engine, and split the YARA worker's request
@example(before=[], bad=b'{"kind": "file", "target": "/tmp/a\\u0000b"}', after=[])
def test_a_malformed_stdin_line_is_an_error_line_and_the_rest_is_scanned(
    sandbox: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_engine: None,
    before: list[bytes],
    bad: bytes,
    after: list[bytes],
) -> None:
    data = b"\n".join([*before, bad, *after]) + b"\n"
    out = sandbox / "out.ndjson"
    stdin = sandbox / "stdin.ndjson"
    stdin.write_bytes(data)
    with stdin.open("rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        code, err = run(capfd, ["scan", "-", "--output", str(out)])
    text = "\n".join(err)
    assert code == 2, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert not [line for line in err if line.startswith("scanner: error: ")], text
    written = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    wanted = sum(1 for b in [*before, bad, *after] if b.strip() and not b.strip().startswith(b"#"))
    assert len(written) == wanted, "every line that is not blank or a comment gets one verdict line"
    where = f"stdin:{len(before) + 1}"
    assert any(
        v["error"] is not None
        and v["error"]["code"] == "bad_target"
        and (v["target"] == where or v["error"]["message"].startswith(where + ": "))
        for v in written
    ), written


def test_quiet_leaves_the_error_to_the_verdict_line(
    sandbox: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fake_engine: None
) -> None:
    stdin = sandbox / "stdin.ndjson"
    stdin.write_bytes(b'{"kind": "site", "target": "example.com"}\n[1, 2]\n')
    out = sandbox / "out.ndjson"
    with stdin.open("rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        code, err = run(capfd, ["scan", "-", "--output", str(out), "-q"])
    assert code == 2
    assert not [line for line in err if line.startswith("scanner: error: ")], err
    bad = [v for v in map(orjson.loads, out.read_bytes().splitlines()) if v["target"] == "stdin:2"]
    assert [v["error"] for v in bad] == [
        {"message": "expected a JSON object with 'kind' and 'target': [1, 2]", "code": "bad_target"}
    ]
