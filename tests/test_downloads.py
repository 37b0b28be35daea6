"""Downloads: ranges (resume), validators (ETag = SHA-256, 304, If-Range, 412), digests, HEAD.

Expected values come from the bytes themselves (hashlib, slicing), never from the server's code.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from sealexports.api.conditional import Representation, parse_range, plan
from sealexports.api.files import CHUNK_BYTES
from sealexports.errors import PreconditionFailed, RangeNotSatisfiable
from sealexports.storage.accounts import create_key
from sealexports.storage.database import connect
from tests import live
from tests.apps import BASE, ApiFactory, Template
from tests.conftest import DemoDB

SHA = hashlib.sha256(b"x").hexdigest()
REP = Representation(size=1000, sha256=SHA, modified=datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC))


# --- the rules, on their own -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=500-", (500, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),  # a suffix longer than the file: all of it
        ("bytes=990-5000", (990, 999)),  # clipped to the end
        ("bytes=999-999", (999, 999)),
        ("BYTES = 1 - 2", (1, 2)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("items=0-5", None),
        ("bytes=5-3", None),  # invalid: ignored
        ("bytes=-", None),
        ("bytes=abc", None),
    ],
)
def test_parse_range(header: str, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as e:
        parse_range(header, 1000)
    assert e.value.size == 1000


def test_validators_and_preconditions() -> None:
    etag = f'"{SHA}"'
    assert plan("GET", {}, REP).status == 200
    assert plan("GET", {"if-none-match": etag}, REP).status == 304
    assert plan("GET", {"if-none-match": f'"other", W/{etag}'}, REP).status == 304  # weak comparison
    assert plan("GET", {"if-none-match": "*"}, REP).status == 304
    assert plan("GET", {"if-none-match": '"other"'}, REP).status == 200
    assert plan("HEAD", {"if-none-match": etag}, REP).status == 304
    # If-Modified-Since counts only without If-None-Match.
    assert plan("GET", {"if-modified-since": "Sat, 01 Mar 2025 12:00:00 GMT"}, REP).status == 304
    assert plan("GET", {"if-modified-since": "Sat, 01 Mar 2025 11:59:59 GMT"}, REP).status == 200
    both = {"if-none-match": '"other"', "if-modified-since": "Sat, 01 Mar 2025 12:00:00 GMT"}
    assert plan("GET", both, REP).status == 200
    assert plan("GET", {"if-match": etag}, REP).status == 200
    with pytest.raises(PreconditionFailed):
        plan("GET", {"if-match": f"W/{etag}"}, REP)  # strong comparison
    # If-Range: the range only for this very file.
    ranged = {"range": "bytes=10-19"}
    assert plan("GET", {**ranged, "if-range": etag}, REP).status == 206
    assert plan("GET", {**ranged, "if-range": REP.last_modified}, REP).status == 206
    assert plan("GET", {**ranged, "if-range": '"other"'}, REP).status == 200
    assert plan("GET", {**ranged, "if-range": f"W/{etag}"}, REP).status == 200
    assert plan("GET", {**ranged, "if-range": "Sat, 01 Mar 2025 11:00:00 GMT"}, REP).status == 200
    # Range is for GET only.
    assert plan("HEAD", ranged, REP).status == 200
    p = plan("GET", ranged, REP)
    assert (p.start, p.end, p.length) == (10, 19, 10)
    assert p.headers["content-range"] == "bytes 10-19/1000" and p.headers["content-length"] == "10"


# --- through the app -------------------------------------------------------------------------------


@pytest.fixture
def downloaded(make: ApiFactory, demo_db: DemoDB) -> tuple[Any, str, bytes]:
    """A completed conversions export (a few hundred KB: more than one read chunk), its download
    path and its bytes."""
    template = Template(demo_db.path, demo_db.site.site_id, str(demo_db.date_from), str(demo_db.date_to))
    api = make(template, sync_row_limit=10**6)
    job = api.created(api.body("microconversions"))["job"]
    assert job["status"] == "completed", job
    path = job["download_url"].removeprefix(BASE)
    r = api.client.get(path)
    assert r.status_code == 200
    return api, path, r.content


def _digest(content: bytes) -> tuple[str, str]:
    raw = hashlib.sha256(content)
    return raw.hexdigest(), base64.b64encode(raw.digest()).decode()


def test_download_headers_name_the_file_by_its_sha256(downloaded: tuple[Any, str, bytes]) -> None:
    api, path, content = downloaded
    hexdigest, b64 = _digest(content)
    r = api.client.get(path)
    assert r.headers["etag"] == f'"{hexdigest}"'
    assert r.headers["repr-digest"] == f"sha-256=:{b64}:"
    assert r.headers["digest"] == f"SHA-256={b64}"
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["accept-ranges"] == "bytes"
    assert int(r.headers["content-length"]) == len(content)
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith("attachment; filename=")
    job = api.list().json()["exports"][0]
    assert api.job(job["job_id"])["file_size_bytes"] == len(content)


def test_ranges_give_the_file_s_own_bytes(downloaded: tuple[Any, str, bytes]) -> None:
    api, path, content = downloaded
    size = len(content)
    assert size > CHUNK_BYTES + 1000  # a range that takes more than one read
    for header, (start, end) in {
        "bytes=0-0": (0, 0),
        f"bytes=100-{CHUNK_BYTES + 999}": (100, CHUNK_BYTES + 999),
        f"bytes={size // 2}-": (size // 2, size - 1),
        "bytes=-1000": (size - 1000, size - 1),
        f"bytes={size - 10}-{size * 2}": (size - 10, size - 1),
    }.items():
        r = api.client.get(path, headers={"Range": header})
        assert r.status_code == 206, (header, r.text)
        assert r.content == content[start : end + 1], header
        assert r.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert int(r.headers["content-length"]) == end - start + 1
        assert r.headers["etag"] == f'"{_digest(content)[0]}"'  # the whole file's, on a part too
        assert r.headers["repr-digest"] == f"sha-256=:{_digest(content)[1]}:"
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["cache-control"] == "private, no-store"


def test_an_unsatisfiable_range_is_416_with_the_size(downloaded: tuple[Any, str, bytes]) -> None:
    api, path, content = downloaded
    r = api.client.get(path, headers={"Range": f"bytes={len(content)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(content)}"
    body = r.json()
    assert body["error"]["code"] == "range_not_satisfiable" and body["request_id"]


def test_several_ranges_or_a_bad_one_get_the_whole_file(downloaded: tuple[Any, str, bytes]) -> None:
    api, path, content = downloaded
    for header in ("bytes=0-10,20-30", "bytes=9-2", "lines=1-2"):
        r = api.client.get(path, headers={"Range": header})
        assert r.status_code == 200 and r.content == content, header


def test_conditional_requests(downloaded: tuple[Any, str, bytes]) -> None:
    api, path, content = downloaded
    etag = f'"{_digest(content)[0]}"'
    r = api.client.get(path, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == etag and r.headers["cache-control"] == "private, no-store"
    assert api.client.head(path, headers={"If-None-Match": etag}).status_code == 304
    assert api.client.get(path, headers={"If-None-Match": '"0000"'}).content == content
    # If-Range with the file's tag resumes; with another file's, the whole (new) file comes back.
    r = api.client.get(path, headers={"Range": "bytes=10-", "If-Range": etag})
    assert r.status_code == 206 and r.content == content[10:]
    r = api.client.get(path, headers={"Range": "bytes=10-", "If-Range": '"0000"'})
    assert r.status_code == 200 and r.content == content
    r = api.client.get(path, headers={"If-Match": '"0000"'})
    assert r.status_code == 412 and r.json()["error"]["code"] == "precondition_failed"


def test_head_has_the_get_s_headers_and_no_body(downloaded: tuple[Any, str, bytes]) -> None:
    api, path, _ = downloaded
    got, head = api.client.get(path), api.client.head(path)
    assert head.status_code == 200 and head.content == b""
    names = ("content-type", "content-length", "content-disposition", "etag", "repr-digest", "digest")
    for name in (*names, "cache-control", "accept-ranges", "last-modified"):
        assert head.headers[name] == got.headers[name], name
    ranged = api.client.head(path, headers={"Range": "bytes=0-9"})  # Range is for GET only
    assert ranged.status_code == 200 and ranged.headers["content-length"] == got.headers["content-length"]


# --- a real client against a real server -----------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_db: DemoDB) -> Any:
    """A live server on a copy of the demo database, with a completed export's link."""
    tmp = tmp_path_factory.mktemp("downloads-live")
    db = tmp / "live.db"
    shutil.copyfile(demo_db.path, db)
    conn = connect(db)
    key = create_key(conn, demo_db.site.site_id)
    conn.close()
    with live.running(db, tmp, env={"SEALEXPORTS_SYNC_ROW_LIMIT": "1000000"}) as server:
        body = {"export_type": "microconversions", "date_from": str(demo_db.date_from),
                "date_to": str(demo_db.date_to)}  # fmt: skip
        r = requests.post(
            f"{server.api}/exports",
            params={"site_id": "demo"},
            json=body,
            headers={"X-API-Key": key},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        yield r.json()["job"]["download_url"]


def test_an_interrupted_download_resumes_to_the_identical_file(served: str, tmp_path: Path) -> None:
    whole = requests.get(served, timeout=30)
    size, etag = len(whole.content), whole.headers["etag"]
    # Half the file, then the connection drops.
    got = bytearray()
    with requests.get(served, stream=True, timeout=30) as r:
        for chunk in r.iter_content(8192):
            got += chunk
            if len(got) >= size // 2:
                break
    assert 0 < len(got) < size
    r = requests.get(served, headers={"Range": f"bytes={len(got)}-", "If-Range": etag}, timeout=30)
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {len(got)}-{size - 1}/{size}"
    got += r.content
    assert bytes(got) == whole.content
    # Verified as a client would, from the header alone.
    b64 = r.headers["repr-digest"].removeprefix("sha-256=:").removesuffix(":")
    assert base64.b64decode(b64) == hashlib.sha256(got).digest()


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
def test_curl_resumes_a_partial_file(served: str, tmp_path: Path) -> None:
    whole = requests.get(served, timeout=30).content
    out = tmp_path / "export.csv"
    out.write_bytes(whole[: len(whole) // 3])
    subprocess.run(["curl", "-sSf", "-C", "-", "-o", str(out), served], check=True, timeout=60)
    assert out.read_bytes() == whole
    # A complete file asks for a range past the end: curl takes the 416 as done.
    subprocess.run(["curl", "-sS", "-C", "-", "-o", str(out), served], check=False, timeout=60)
    assert out.read_bytes() == whole


def test_a_compressed_file_resumes_and_its_etag_is_of_the_compressed_bytes(
    make: ApiFactory, demo_db: DemoDB
) -> None:
    template = Template(demo_db.path, demo_db.site.site_id, str(demo_db.date_from), str(demo_db.date_to))
    api = make(template, sync_row_limit=10**6)
    job = api.created(api.body("microconversions", compression="gzip"))["job"]
    path = job["download_url"].removeprefix(BASE)
    whole = api.client.get(path)
    assert whole.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in whole.headers  # the file is gzip: nothing to undo on the way
    assert whole.headers["etag"] == f'"{hashlib.sha256(whole.content).hexdigest()}"'
    half = len(whole.content) // 2
    rest = api.client.get(path, headers={"Range": f"bytes={half}-", "If-Range": whole.headers["etag"]})
    assert rest.status_code == 206 and whole.content[:half] + rest.content == whole.content
    assert gzip.decompress(whole.content).startswith(b"date,timestamp,")
