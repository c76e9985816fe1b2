"""Third-party clients pointed at ``scanner simulate metadefender``, changed only in their base URL.

OPSWAT's own SDK (``mcl-platform-sdk``, urllib3 + pydantic models) and the community
``MetaDefender-api`` client (requests) are dev dependencies; both are synchronous, so these tests are
plain functions against one simulator subprocess per module. What each client sends, from its
source: the SDK uploads ``multipart/form-data`` (one part named ``file``, its filename being the
part's name when given bytes), sends ``apikey`` only where the caller passes it (except for the two
file calls, which fall back to the client's key), and GETs ``/apikey/`` with a trailing slash;
``MetaDefender-api`` joins ``https://api.metadefender.com/v4/`` with paths that begin with ``/``, so
everything but ``apikey/`` arrives with a double slash (``/v4//file``).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mcl_platform_sdk import ApiClient, Configuration
from mcl_platform_sdk.api.apikey_api import ApikeyApi
from mcl_platform_sdk.api.file_scanning_api import FileScanningApi
from mcl_platform_sdk.api.hash_lookups_api import HashLookupsApi
from mcl_platform_sdk.models.multiple_hash_lookup_request import MultipleHashLookupRequest
from mcl_platform_sdk.rest import ApiException

from scanner.testing import eicar

from .conftest import KEY

PREVENTION_LIMIT = 50


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """``scanner simulate metadefender --port 0`` as a subprocess; yields its base URL (no /v4)."""
    argv = [sys.executable, "-m", "scanner", "simulate", "metadefender", "--port", "0"]
    argv += ["--set", f"api_keys={KEY}", "--set", "scan_seconds=0.3"]
    argv += ["--set", f"prevention_limit={PREVENTION_LIMIT}"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m and m.group(1) != "0", line
        yield f"http://127.0.0.1:{m.group(1)}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def unique(label: str) -> bytes:
    """Content no other test (or earlier run against this module's server) uploaded."""
    return f"{label} {os.urandom(8).hex()}\n".encode() * 20


def digests(content: bytes) -> dict[str, str]:
    return {
        "md5": hashlib.md5(content, usedforsecurity=False).hexdigest(),
        "sha1": hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        "sha256": hashlib.sha256(content).hexdigest(),
    }


@pytest.fixture
def sdk(served: str) -> ApiClient:
    return ApiClient(configuration=Configuration(host=f"{served}/v4"), api_key=KEY)


def test_sdk_upload_poll_and_lookup_by_each_hash(sdk: ApiClient) -> None:
    content = eicar() + unique("sdk upload")
    want = digests(content)
    files = FileScanningApi(sdk)
    upload = files.analyze_file(file=("sample.com", content), headers={"filename": "sample.com"})
    assert upload.sha256 == want["sha256"].upper()
    assert upload.sha1 == want["sha1"].upper()
    result = files.get_file_analysis(upload.data_id, headers={"timeout": 10, "poll_interval": 0.05})
    assert result.scan_results is not None and result.scan_results.progress_percentage == 100
    assert result.scan_results.scan_all_result_i == 1
    assert result.file_info is not None
    assert result.file_info.file_size == len(content)  # the file's, not the multipart envelope's
    assert result.file_info.display_name == "sample.com"
    hashes = HashLookupsApi(sdk)
    for name, value in want.items():
        for spelling in (value, value.upper()):
            found = hashes.lookup_hash(spelling, headers={"apikey": KEY})
            assert found.data_id == upload.data_id, name
            assert found.file_info is not None
            assert (found.file_info.md5, found.file_info.sha1, found.file_info.sha256) == (
                want["md5"].upper(),
                want["sha1"].upper(),
                want["sha256"].upper(),
            )
            assert found.scan_results is not None and found.scan_results.scan_all_result_i == 1
            assert found.scan_results.start_time and found.scan_results.total_time >= 0


def test_sdk_bulk_lookup_of_known_hashes_and_a_miss(sdk: ApiClient) -> None:
    content = unique("sdk bulk")
    upload = FileScanningApi(sdk).analyze_file(file=content)
    want = digests(content)
    hashes = HashLookupsApi(sdk)
    # every hash kind in one request; the SDK's model needs scan_details on each item
    found = hashes.lookup_hashes(
        MultipleHashLookupRequest(hash=list(want.values())),
        headers={"apikey": KEY, "includescandetails": "1"},
    )
    assert [item.data_id for item in found.data] == [upload.data_id] * 3
    with pytest.raises(ApiException) as miss:
        hashes.lookup_hash("0" * 64, headers={"apikey": KEY})
    assert miss.value.status == 404
    assert '"code":404003' in (miss.value.body or "")


def test_sdk_apikey_info_and_limits(sdk: ApiClient) -> None:
    FileScanningApi(sdk).analyze_file(file=unique("sdk limits"))
    keys = ApikeyApi(sdk)
    info = keys.get_api_key(headers={"apikey": KEY})
    assert info.max_upload_file_size == 140
    assert info.limit_prevention == PREVENTION_LIMIT
    used = keys.get_api_key_limits(headers={"apikey": KEY})
    remaining = keys.get_api_key_remaining_limits(headers={"apikey": KEY})
    assert used.prevention_api is not None and used.prevention_api >= 1
    assert remaining.prevention_api is not None
    assert used.prevention_api + remaining.prevention_api == PREVENTION_LIMIT
    with pytest.raises(ApiException) as bad:
        keys.get_api_key(headers={"apikey": "not-a-key"})
    assert bad.value.status == 401


def test_metadefender_api_client_flows(served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import MetaDefender.api as mdapi

    monkeypatch.setattr(mdapi, "api_url", f"{served}/v4/")  # the client's one base-URL setting
    client = mdapi.MetaDefender_api
    path = tmp_path / "report.txt"
    content = unique("metadefender-api")
    path.write_bytes(content)
    want = digests(content)
    result: Any = client.File_Scanning(str(path), key=KEY)  # multipart upload, then polls to 100 %
    assert isinstance(result, dict), result
    assert result["scan_results"]["progress_percentage"] == 100
    assert result["file_info"]["sha256"] == want["sha256"].upper()
    assert result["file_info"]["file_size"] == len(content)
    assert result["file_info"]["display_name"] == "report.txt"
    for value in want.values():
        found: Any = client.Hash_Lookup(value, key=KEY)
        assert isinstance(found, dict), found
        assert found["data_id"] == result["data_id"]
    info: Any = client.Apikey_info(key=KEY)
    assert isinstance(info, dict) and info["max_upload_file_size"] == 140, info
    limits: Any = client.Apikey_remaining_limits(key=KEY)
    assert isinstance(limits, dict) and limits["prevention_api"] < PREVENTION_LIMIT, limits


@pytest.mark.parametrize("kind", ["multipart", "raw"])
def test_curl_style_uploads_hash_the_file(served: str, kind: str) -> None:
    """``curl -F file=@x`` and ``curl --data-binary @x`` (the documented samples) as requests sends them."""
    content = unique(f"curl {kind}")
    h = {"apikey": KEY, "filename": "x.bin"}
    if kind == "multipart":
        # a form field before the file part, as curl -F name=value -F file=@x sends
        r = requests.post(
            f"{served}/v4/file", headers=h, data={"note": "hi"}, files={"file": content}, timeout=10
        )
    else:
        h["Content-Type"] = "application/octet-stream"
        r = requests.post(f"{served}/v4/file", headers=h, data=content, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == digests(content)["sha256"].upper()
    r = requests.get(f"{served}/v4/hash/{digests(content)['md5']}", headers={"apikey": KEY}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["file_info"]["file_size"] == len(content)
