"""fetch_file: placed files, downloads from a server on 127.0.0.1, checksums, clear errors, nothing lost."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from reid.data.fetch import (
    ChecksumError,
    DownloadError,
    MissingArchiveError,
    fetch_file,
    file_digests,
    torchvision_sha256_prefix,
    verify_checksum,
)
from reid.data.kinds import REGISTRY as KNOWN_SPLITS

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB: more than one read chunk
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/good.zip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated.zip":  # promises everything, sends half, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "no such file")

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_placed_file_with_matching_sums_is_used(tmp_path):
    (tmp_path / "a.zip").write_bytes(PAYLOAD)
    path = fetch_file("a.zip", tmp_path, url=None, md5=MD5.upper(), sha256=SHA)
    assert path == tmp_path / "a.zip" and path.read_bytes() == PAYLOAD


def test_placed_file_with_wrong_checksum_is_moved_aside_not_deleted(tmp_path):
    (tmp_path / "a.zip").write_bytes(PAYLOAD)
    wrong = "0" * 32
    with pytest.raises(ChecksumError) as err:
        fetch_file("a.zip", tmp_path, url=None, md5=wrong)
    msg = str(err.value)
    assert wrong in msg and MD5 in msg and str(tmp_path / "a.zip") in msg
    aside = tmp_path / f"a.zip.bad-{MD5[:8]}"
    assert err.value.moved_to == aside and aside.read_bytes() == PAYLOAD
    assert listing(tmp_path) == [aside.name]
    # a second bad copy does not overwrite the first
    (tmp_path / "a.zip").write_bytes(PAYLOAD)
    with pytest.raises(ChecksumError):
        fetch_file("a.zip", tmp_path, url=None, sha256="f" * 64)
    assert listing(tmp_path) == [aside.name, aside.name + "-1"]


def test_missing_file_says_where_to_get_it_and_where_to_put_it(tmp_path):
    market = KNOWN_SPLITS["market1501"]
    with pytest.raises(MissingArchiveError) as err:
        fetch_file(market.archive, tmp_path / "resources", url=None, md5=market.md5, how_to_get=market.how_to_get)
    msg = str(err.value)
    assert "zheng-lab.cecs.anu.edu.au" in msg
    assert str((tmp_path / "resources" / market.archive).resolve()) in msg
    duke = KNOWN_SPLITS["dukemtmcreid"]
    with pytest.raises(MissingArchiveError, match="offline since 2019"):
        fetch_file(duke.archive, tmp_path, url=None, how_to_get=duke.how_to_get)


def test_download_from_local_server(tmp_path, server):
    res = tmp_path / "resources"
    path = fetch_file("good.zip", res, url=f"{server}/good.zip", md5=MD5, sha256=SHA)
    assert path.read_bytes() == PAYLOAD
    assert listing(res) == ["good.zip"]  # no temporary file left behind
    # second call: the file is there, no server needed
    assert fetch_file("good.zip", res, url="http://127.0.0.1:9/unreachable", md5=MD5) == path


def test_download_without_checksum_is_accepted_and_digests_logged(tmp_path, server, caplog):
    with caplog.at_level("WARNING"):
        path = fetch_file("x.zip", tmp_path, url=f"{server}/good.zip")
    assert file_digests(path) == {"md5": MD5, "sha256": SHA}
    assert MD5 in caplog.text and "no checksum configured" in caplog.text


def test_download_with_wrong_checksum_is_not_installed(tmp_path, server):
    wrong = "1" * 64
    with pytest.raises(ChecksumError) as err:
        fetch_file("good.zip", tmp_path, url=f"{server}/good.zip", sha256=wrong)
    msg = str(err.value)
    assert wrong in msg and SHA in msg and f"{server}/good.zip" in msg
    assert not (tmp_path / "good.zip").exists()
    assert listing(tmp_path) == [f"good.zip.bad-{MD5[:8]}"]  # kept for inspection, no .part left


def test_truncated_download_leaves_nothing(tmp_path, server):
    with pytest.raises(DownloadError) as err:
        fetch_file("t.zip", tmp_path, url=f"{server}/truncated.zip", md5=MD5)
    msg = str(err.value)
    assert str(len(PAYLOAD)) in msg and "nothing was written" in msg
    assert listing(tmp_path) == []


def test_truncated_download_fails_even_without_checksum(tmp_path, server):
    with pytest.raises(DownloadError):
        fetch_file("t.zip", tmp_path, url=f"{server}/truncated.zip")
    assert listing(tmp_path) == []


def test_http_error_is_named(tmp_path, server):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_file("nope.zip", tmp_path, url=f"{server}/nope.zip")
    assert listing(tmp_path) == []


def test_file_url_and_bad_inputs(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    res = tmp_path / "res"
    assert fetch_file("w.pth", res, url=src.as_uri(), sha256=SHA).read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="plain file name"):
        fetch_file("../w.pth", res, url=None)
    with pytest.raises(ValueError, match="'abc' is not a 32-digit hex"):
        fetch_file("w.pth", res, url=None, md5="abc")
    with pytest.raises(ValueError, match="scheme 'ftp' not supported"):
        fetch_file("new.pth", res, url="ftp://127.0.0.1/x")


def test_torchvision_hash_prefix(tmp_path):
    assert torchvision_sha256_prefix("resnet50-0676ba61.pth") == "0676ba61"
    assert torchvision_sha256_prefix("/x/y/resnet18-f37072fd.pth") == "f37072fd"
    assert torchvision_sha256_prefix("Market-1501-v15.09.15.zip") is None
    assert torchvision_sha256_prefix("model-abc.pth") is None  # fewer than 8 hex digits
    good = tmp_path / f"resnet-{SHA[:8]}.pth"
    good.write_bytes(PAYLOAD)
    assert verify_checksum(good, sha256_prefix=torchvision_sha256_prefix(good))["sha256"] == SHA
    bad = tmp_path / "resnet-00000000.pth"
    bad.write_bytes(PAYLOAD)
    with pytest.raises(ChecksumError, match=f"sha256 prefix: expected 00000000, got {SHA[:8]}"):
        fetch_file(bad.name, tmp_path, url=None, sha256_prefix=torchvision_sha256_prefix(bad))
    assert (tmp_path / f"{bad.name}.bad-{MD5[:8]}").exists() and not bad.exists()
