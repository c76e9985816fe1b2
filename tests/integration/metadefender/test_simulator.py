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


async def test_multipart_upload_is_hashed_sized_and_limited_by_the_file_alone() -> None:
    """``curl -F note=x -F file=@f``: the file part's bytes, not the envelope, are the file."""
    content = b"y" * (1024 * 1024)  # exactly max_upload_mb: the envelope around it is over
    async with simulator(max_upload_mb=1) as sim, aiohttp.ClientSession() as s:
        form = aiohttp.FormData()
        form.add_field("note", "a form field first")
        form.add_field("file", content, filename="big.bin", content_type="application/octet-stream")
        async with s.post(f"{sim.url}/v4/file", data=form, headers={"apikey": KEY}) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        assert answer["sha256"] == hashlib.sha256(content).hexdigest().upper()
        async with s.get(f"{sim.url}/v4/file/{answer['data_id']}", headers={"apikey": KEY}) as r:
            info = (await r.json())["file_info"]
        assert (info["file_size"], info["display_name"], info["file_type_extension"]) == (
            len(content),
            "big.bin",
            "bin",
        )
        form = aiohttp.FormData(default_to_multipart=True)
        form.add_field("note", "no file here")
        form.add_field("other", "still none")
        async with s.post(f"{sim.url}/v4/file", data=form, headers={"apikey": KEY}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["messages"] == ["the multipart body holds no file part"]
        assert sim.state.uploads == 1


async def test_lookups_by_md5_sha1_and_sha256_in_either_case() -> None:
    async with simulator() as sim, aiohttp.ClientSession() as s:
        rep = sim.state.preload(eicar(), "eicar.com")
        h = {"apikey": KEY}
        for digest in (hashlib.md5, hashlib.sha1, hashlib.sha256):
            value = digest(eicar()).hexdigest()
            for spelling in (value, value.upper()):
                async with s.get(f"{sim.url}/v4/hash/{spelling}", headers=h) as r:
                    assert r.status == 200
                    body = await r.json()
                assert body["data_id"] == rep.data_id
        async with s.post(
            f"{sim.url}/v4/hash",
            json={"hash": [hashlib.md5(eicar(), usedforsecurity=False).hexdigest()]},
            headers=h,
        ) as r:
            assert (await r.json())["data"][0]["data_id"] == rep.data_id
        # the fields OPSWAT's SDK requires of a found hash
        assert body["file_info"]["sha1"] == hashlib.sha1(eicar(), usedforsecurity=False).hexdigest().upper()
        assert body["file_info"]["md5"] == hashlib.md5(eicar(), usedforsecurity=False).hexdigest().upper()
        assert body["file_info"]["file_type_extension"] == "com"
        assert {"start_time", "total_time"} <= set(body["scan_results"])
        assert (body["share_file"], body["rest_version"], body["additional_info"]) == (1, "4", [])


async def test_paths_with_doubled_or_trailing_slashes_reach_their_endpoints() -> None:
    async with simulator(prevention_limit=5) as sim, aiohttp.ClientSession() as s:
        h = {"apikey": KEY}
        async with s.post(f"{sim.url}/v4//file", data=b"slashes", headers=h) as r:
            assert r.status == 200
            data_id = (await r.json())["data_id"]
        async with s.get(f"{sim.url}/v4//file/{data_id}/", headers=h) as r:
            assert (await r.json())["data_id"] == data_id
        async with s.get(f"{sim.url}/v4/apikey/", headers=h) as r:
            assert (await r.json())["max_upload_file_size"] == 140
        async with s.get(f"{sim.url}/v4//apikey/limits", headers=h) as r:
            assert (await r.json())["prevention_api"] == 1
        async with s.get(f"{sim.url}/v4/apikey/limits/status/", headers=h) as r:
            assert (await r.json())["prevention_api"] == 4
        async with s.get(f"{sim.url}/v2/file/x", headers=h) as r:
            assert r.status == 404
            assert "Please use V4 API" in (await r.json())["error"]["messages"][0]
        async with s.get(f"{sim.url}/v4/nothing", headers=h) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == 404000
        async with s.delete(f"{sim.url}/v4/file", headers=h) as r:
            assert r.status == 405
