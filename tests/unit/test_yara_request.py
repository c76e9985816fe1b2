"""The YARA worker's request frame: any POSIX file name survives the trip, flags stay with their path."""

from __future__ import annotations

import io
import os
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.engines._yara_worker import decode_request, encode_request
from scanner.model import Kind, Target
from scanner.state import content_version

# a POSIX name: any bytes but NUL (and "/" is fine inside a path)
_names = st.binary(min_size=1, max_size=40).filter(lambda b: b"\0" not in b).map(os.fsdecode)


@given(st.lists(st.tuples(_names, st.booleans()), max_size=50))
def test_round_trip(jobs: list[tuple[str, bool]]) -> None:
    frame = encode_request([p for p, _ in jobs], [f for _, f in jobs])
    assert decode_request(frame) == jobs


def test_awkward_names() -> None:
    names = ["/a b/c", "/new\nline", "/-dash", "/é", os.fsdecode(b"/bad\xff\xfe"), "/q'\"", "/tab\t"]
    flags = [True, False, True, False, True, False, True]
    assert decode_request(encode_request(names, flags)) == list(zip(names, flags, strict=True))


def test_a_frame_that_lies_about_its_count_is_refused() -> None:
    frame = encode_request(["/a", "/b"], [False, False])
    with pytest.raises(ValueError, match="malformed request frame"):
        decode_request(b"\x00\x00\x00\x03" + frame[4:])


def test_a_result_carries_the_version_of_the_file_it_read(tmp_path: Path) -> None:
    # the content version of what was scanned, for a state store whose walk did not stat the file
    import yara_x

    from scanner._versions import file_version
    from scanner.engines import _yara_worker
    from scanner.engines.yara import _outcome

    rules = io.BytesIO()
    yara_x.compile("rule never { condition: false }").serialize_into(rules)
    _yara_worker.init(rules.getvalue(), 0.5, 1 << 20)  # a fraction of a second: 1 s for yara-x
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello")
    os.utime(f, (1.0, 1234567890.123456))
    (result,) = orjson.loads(orjson.dumps(_yara_worker.scan_batch([(str(f), False)])))
    outcome = _outcome(result)
    # the very string a statting walk gives the file: a later --skip-unchanged run matches it
    walked = Target(Kind.FILE, str(f), size=5, version=file_version(os.stat(f)))
    assert (outcome.size, outcome.version) == (5, content_version(walked))
    assert _outcome(result, own_file=False).version is None  # a spooled copy's mtime is no version


@pytest.mark.parametrize(("text", "seconds"), [("0.5", 0.5), ("2", 2.0), ("0", 0.0)])
def test_the_timeout_takes_fractions_of_a_second(tmp_path: Path, text: str, seconds: float) -> None:
    from scanner import config, engines
    from scanner.engines.yara import Config

    p = tmp_path / "scanner.toml"
    p.write_text(f"[engines.yara]\ntimeout = {text}\n")
    engines.validate_all(config.load(p))
    assert config.validate_section(Config, {"timeout": float(text)}, "engines.yara").timeout == seconds


def test_a_negative_timeout_is_refused(tmp_path: Path) -> None:
    from scanner import config, engines
    from scanner.errors import ConfigError

    p = tmp_path / "scanner.toml"
    p.write_text("[engines.yara]\ntimeout = -0.5\n")
    with pytest.raises(ConfigError, match=r"engines\.yara\.timeout"):
        engines.validate_all(config.load(p))


@pytest.mark.parametrize("text", ["inf", "+inf", "nan", "86401", '"inf"'])
def test_a_timeout_that_is_not_finite_or_over_a_day_is_refused_naming_the_key(
    tmp_path: Path, text: str
) -> None:
    # inf used to pass, reach the workers as JSON null and fail every one of them at start-up
    from scanner import config, engines
    from scanner.errors import ConfigError

    p = tmp_path / "scanner.toml"
    p.write_text(f"[engines.yara]\ntimeout = {text}\n")
    with pytest.raises(ConfigError, match=r"engines\.yara\.timeout"):
        engines.validate_all(config.load(p))


def test_a_day_is_the_longest_timeout(tmp_path: Path) -> None:
    from scanner import config
    from scanner.engines.yara import Config

    assert config.validate_section(Config, {"timeout": 86400}, "engines.yara").timeout == 86400


def test_the_worker_turns_a_path_it_cannot_open_into_that_paths_error(tmp_path: Path) -> None:
    import yara_x

    from scanner.engines import _yara_worker

    rules = io.BytesIO()
    yara_x.compile("rule never { condition: false }").serialize_into(rules)
    _yara_worker.init(rules.getvalue(), 1, 1 << 20)
    f = tmp_path / "f.txt"
    f.write_bytes(b"hello")
    # a NUL byte: os.open raises ValueError, which used to kill the worker (and its batch)
    bad, good = _yara_worker.scan_batch([(str(f) + "\0x", True), (str(f), True)])
    assert bad[:2] == ("err", "bad_target") and bad[3] is None
    assert good[0] == "ok"


@pytest.mark.anyio
async def test_a_path_with_a_nul_byte_costs_its_own_result_not_the_batch(tmp_path: Path) -> None:
    # NUL separates a request's paths: sent, it would split the frame and the worker would refuse it all
    from scanner.engines.yara import Config, YaraEngine, _outcome
    from scanner.errors import TargetError

    class Pool:
        def __init__(self) -> None:
            self.frames: list[list[tuple[str, bool]]] = []

        async def call(self, frame: bytes) -> bytes:
            jobs = decode_request(frame)  # raises on a split frame, as the worker does
            self.frames.append(jobs)
            return orjson.dumps([["ok", 1, "0" * 64, [], "v"] for _ in jobs])

    engine = YaraEngine(Config(processes=1))
    pool = Pool()
    engine._pool = pool  # type: ignore[assignment]
    answers = await engine._call(["/a", "/b\0c", "/d"], [True, False, True])
    assert pool.frames == [[("/a", True), ("/d", True)]]
    assert [a[0] for a in answers] == ["ok", "err", "ok"]
    with pytest.raises(TargetError) as info:
        _outcome(answers[1])
    assert info.value.code == "bad_target"
    assert await engine._call(["/only\0nul"], [True]) == [answers[1]]
    assert pool.frames == [[("/a", True), ("/d", True)]]  # nothing sent for a batch of none
