"""MetaDefender parsing on payloads recorded from the vendor's documents (shared/notes/vendors.md s.3)."""

from __future__ import annotations

import orjson
import pytest

from scanner.engines import _metadefender_wire as wire
from scanner.errors import ProtocolError
from scanner.model import Finding, Status

# the headers of the documented upload answer (api-authentication-mechanisms)
DOC_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "X-Authenticated": "by apikey",
    "X-RateLimit-For": "prevention_api",
    "X-RateLimit-Interval": "3600",
    "X-RateLimit-Limit": "100",
    "X-RateLimit-Remaining": "98",
    "X-RateLimit-Reset-In": "3294s",
    "X-RateLimit-Used": "1",
    "X-Response-Time": "123ms",
}
THROTTLE_BODY = orjson.dumps(
    {
        "error": {
            "name": "ClientError",
            "messages": "Your request has been throttled, maximum requests per hour: 9 for free users",
            "code": 429001,
            "status": 429,
        }
    }
)
IN_PROGRESS = {
    "data_id": "ZTE2MTIyNkhKeGs5WElSNHhIMVFGLVlUYk85LQ",
    "status": "inqueue",
    "in_queue": 1,
    "last_updated": "2016-06-21T14:17:59Z",
}
FINAL = {
    "data_id": "bzIwMDcyN3NEZGpiUUJyOGI4YVBndzMzaHBa",
    "file_id": "bzIwMDcyN3NEZGpiUUJyOGI4YVBndzMzaHBa",
    "scan_result_history_length": 1,
    "scan_results": {
        "scan_details": {
            "ClamAV": {
                "scan_time": 2,
                "def_time": "2020-01-01T00:00:00.000Z",
                "scan_result_i": 1,
                "threat_found": "Eicar-Signature",
            },
            "Ahnlab": {
                "scan_time": 1,
                "def_time": "2020-01-01T00:00:00.000Z",
                "scan_result_i": 0,
                "threat_found": "",
            },
        },
        "scan_all_result_i": 1,
        "scan_all_result_a": "Infected",
        "progress_percentage": 100,
        "total_avs": 2,
        "total_detected_avs": 1,
    },
    "file_info": {"sha256": "CF8DE586" + "0" * 56, "file_size": 68, "display_name": "eicar.com"},
    "process_info": {"progress_percentage": 100, "result": "Blocked", "blocked_reason": "Infected"},
}
BULK = {
    "data": [
        {"data_id": "ZDE3", "scan_result_i": 0, "hash": "8F79AB", "total_detected_avs": 0},
        {"data_id": None, "hash": "3433CD", "scan_result_i": 5, "total_detected_avs": -1},
    ]
}


def test_documented_headers_give_the_family_budget_and_reset() -> None:
    h = wire.parse_hint(200, DOC_HEADERS, b"{}")
    assert (h.family, h.limit, h.remaining, h.used, h.interval, h.reset_in) == (
        "prevention_api",
        100,
        98,
        1,
        3600.0,
        3294.0,
    )
    assert not h.throttled
    assert not h.quota


def test_header_names_are_case_insensitive() -> None:
    h = wire.parse_hint(200, {k.lower(): v for k, v in DOC_HEADERS.items()}, b"")
    assert h.remaining == 98


def test_throttle_429_is_told_by_its_body_code() -> None:
    h = wire.parse_hint(429, {**DOC_HEADERS, "X-RateLimit-Remaining": "40"}, THROTTLE_BODY)
    assert h.throttled
    assert not h.quota


def test_quota_429_is_remaining_zero_without_the_throttle_code() -> None:
    body = orjson.dumps(
        {"error": {"code": 429000, "messages": ["Rate limit exceeded, retry after the limit is reset."]}}
    )
    h = wire.parse_hint(
        429, {**DOC_HEADERS, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-In": "86000s"}, body
    )
    assert h.quota
    assert not h.throttled
    assert h.reset_in == 86000.0


def test_an_unexplained_429_is_read_as_a_throttle() -> None:
    assert wire.parse_hint(429, {}, b"").throttled


@pytest.mark.parametrize(
    ("text", "seconds"), [("3294s", 3294.0), ("86400", 86400.0), ("", None), ("soon", None)]
)
def test_reset_in(text: str, seconds: float | None) -> None:
    assert wire.parse_reset_in(text) == seconds


def test_error_messages_as_list_or_string() -> None:
    listed = wire.parse_error(b'{"error":{"code":404008,"messages":["The apikey was not found"]}}')
    assert listed == wire.VendorError(404008, "The apikey was not found")
    err = wire.parse_error(THROTTLE_BODY)
    assert err is not None
    assert err.code == 429001
    assert "throttled" in err.message
    assert wire.parse_error(b"not json") is None
    assert wire.parse_error(b"") is None


def test_in_progress_report_is_not_done() -> None:
    r = wire.parse_report(IN_PROGRESS)
    assert not r.done
    assert r.result_i is None


def test_255_is_still_running_even_at_100_percent() -> None:
    r = wire.parse_report({"scan_results": {"progress_percentage": 100, "scan_all_result_i": 255}})
    assert not r.done


def test_final_report_carries_threat_names_per_engine() -> None:
    r = wire.parse_report(FINAL)
    assert r.done
    assert r.result_i == 1
    assert r.size == 68
    assert r.threats == (Finding(name="Eicar-Signature", engine="ClamAV"),)
    assert r.sha256 == ("CF8DE586" + "0" * 56).lower()


def test_bulk_answer_maps_every_asked_hash() -> None:
    items = wire.parse_bulk(BULK, ["8f79ab", "3433cd", "ffff"])
    assert items["8f79ab"].found
    assert items["8f79ab"].done
    assert not items["3433cd"].found
    assert not items["ffff"].found  # omitted by the answer: a miss


def test_bulk_without_data_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        wire.parse_bulk({"error": {}}, ["a"])


def test_upload_and_apikey() -> None:
    assert wire.parse_upload({"data_id": "abc", "status": "inqueue"}) == "abc"
    with pytest.raises(ProtocolError):
        wire.parse_upload({"status": "inqueue"})
    assert wire.parse_apikey({"max_upload_file_size": 140}).max_upload_bytes == 140 * 1024 * 1024
    assert wire.parse_apikey({}).max_upload_bytes is None


EXPECTED = {
    0: Status.CLEAN, 7: Status.CLEAN,
    1: Status.INFECTED, 4: Status.INFECTED, 6: Status.INFECTED, 8: Status.INFECTED,
    2: Status.SUSPICIOUS,
    9: Status.UNSCANNABLE, 10: Status.UNSCANNABLE, 12: Status.UNSCANNABLE, 13: Status.UNSCANNABLE,
    14: Status.UNSCANNABLE, 15: Status.UNSCANNABLE,
    3: Status.ERROR, 11: Status.ERROR,
}  # fmt: skip


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_map_result_as_the_issue_says(code: int) -> None:
    status, findings, error = wire.map_result(code, ())
    assert status is EXPECTED[code]
    if status in (Status.INFECTED, Status.SUSPICIOUS):
        assert findings
        assert findings[0].name
    if status in (Status.UNSCANNABLE, Status.ERROR):
        assert error is not None
        assert error.message
        assert error.retryable is (code == 11)


@pytest.mark.parametrize("code", [5, 99, 255, None])
def test_unknown_codes_are_errors_never_clean(code: int | None) -> None:
    assert wire.map_result(code, ())[0] is Status.ERROR


def test_threat_names_become_findings() -> None:
    status, findings, _ = wire.map_result(1, (Finding("Eicar-Signature", engine="ClamAV"),))
    assert status is Status.INFECTED
    assert findings[0].name == "Eicar-Signature"
