"""The simulator itself, spoken to with plain aiohttp: the documented rules a faithful fake must keep."""

from __future__ import annotations

import hashlib
import io

import aiohttp
import pytest

from scanner.testing import eicar

from .conftest import KEY, simulator

pytestmark = pytest.mark.anyio

RATE_HEADERS = (
    "X-RateLimit-For",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Used",
    "X-RateLimit-Interval",
    "X-RateLimit-Reset-In",
)


async def test_every_answer_carries_the_rate_headers_and_windows_start_at_first_request() -> None:
    async with simulator(prevention_limit=3, interval=100) as sim, aiohttp.ClientSession() as s:
        h = {"apikey": KEY}
        async with s.post(f"{sim.url}/v4/file", data=b"abc", headers=h) as r:
            assert r.status == 200
            assert all(name in r.headers for name in RATE_HEADERS)
            assert r.headers["X-RateLimit-For"] == "prevention_api"
            assert r.headers["X-RateLimit-Remaining"] == "2"
            assert r.headers["X-RateLimit-Reset-In"] in ("100s", "99s")
            data_id = (await r.json())["data_id"]
        async with s.get(f"{sim.url}/v4/file/{data_id}", headers=h) as r:
            assert r.headers["X-RateLimit-Remaining"] == "2"  # polls are free
            body = await r.json()
            assert body["scan_results"]["progress_percentage"] == 100
        async with s.post(f"{sim.url}/v4/hash", json={"hash": ["00"]}, headers=h) as r:
            assert r.headers["X-RateLimit-For"] == "reputation_api"


async def test_bulk_hash_rules() -> None:
    async with simulator() as sim, aiohttp.ClientSession() as s:
        sim.state.preload(eicar())
        h = {"apikey": KEY, "includescandetails": "1"}
        known = hashlib.sha256(eicar()).hexdigest().upper()
        async with s.post(f"{sim.url}/v4/hash", json={"hash": [known, "ab" * 32]}, headers=h) as r:
            items = (await r.json())["data"]
        assert items[0]["scan_result_i"] == 1
        assert items[0]["scan_details"]["SimAV"]["threat_found"] == "EICAR-Test-File (not a virus)"
        assert items[1] == {"data_id": None, "hash": "ab" * 32, "scan_result_i": 5, "total_detected_avs": -1}
        assert r.headers["X-RateLimit-Used"] == "1"  # charged per found hash only
        for payload, text in (
            ({"hash": []}, "hashes in body content is null or empty"),
            ({"hash": ["00"] * 1001}, "Exceeded maximum allowed. Allow maximum 1000 hashes"),
        ):
            async with s.post(f"{sim.url}/v4/hash", json=payload, headers=h) as r:
                assert r.status == 400
                assert (await r.json())["error"]["messages"] == [text]
        async with s.post(f"{sim.url}/v4/hash", data=b"{not json", headers=h) as r:
            assert (await r.json())["error"]["messages"] == ["Could not parse body content."]


async def test_both_429_kinds_have_their_documented_bodies() -> None:
    async with simulator(prevention_limit=1, throttle_limit=2, throttle_window=60) as sim:
        async with aiohttp.ClientSession() as s:
            h = {"apikey": KEY}
            statuses = []
            for i in range(3):
                async with s.post(f"{sim.url}/v4/file", data=f"x{i}".encode(), headers=h) as r:
                    statuses.append((r.status, r.headers["X-RateLimit-Remaining"], await r.json()))
        assert statuses[0][0] == 200
        quota_status, remaining, quota = statuses[1]
        assert (quota_status, remaining) == (429, "0")
        assert quota["error"]["code"] != 429001
        assert "Rate limit exceeded" in quota["error"]["messages"][0]
        throttle = statuses[2][2]["error"]
        assert throttle["code"] == 429001
        assert isinstance(throttle["messages"], str)  # a string here, unlike other errors


async def test_upload_size_limit_and_unknown_data_id() -> None:
    async with simulator(max_upload_mb=1) as sim, aiohttp.ClientSession() as s:
        h = {"apikey": KEY}
        async with s.post(f"{sim.url}/v4/file", data=io.BytesIO(b"x" * (1024 * 1024 + 1)), headers=h) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == 400144
        async with s.get(f"{sim.url}/v4/file/nope", headers=h) as r:
            assert r.status == 404
        assert sim.state.uploads == 0


async def test_in_progress_for_the_configured_time() -> None:
    async with simulator(scan_seconds=30) as sim, aiohttp.ClientSession() as s:
        h = {"apikey": KEY}
        async with s.post(f"{sim.url}/v4/file", data=b"MD-RESULT-2", headers=h) as r:
            data_id = (await r.json())["data_id"]
        async with s.get(f"{sim.url}/v4/file/{data_id}", headers=h) as r:
            body = await r.json()
        assert body["scan_results"]["scan_all_result_i"] == 255
        assert body["scan_results"]["progress_percentage"] < 100


async def test_missing_key_is_401_and_counts_toward_the_ip_block() -> None:
    async with simulator(bad_key_limit=2) as sim, aiohttp.ClientSession() as s:
        for expected in (401, 401, 403):
            async with s.get(f"{sim.url}/v4/apikey") as r:
                assert r.status == expected
        async with s.get(f"{sim.url}/v4/apikey", headers={"apikey": KEY}) as r:
            assert r.status == 403  # blocked IP: even a good key
        async with s.get(f"{sim.url}/_sim/stats") as r:
            stats = await r.json()
        assert stats["unauthorized"] == 2
        assert stats["forbidden"] == 2
