"""Matrix, Data rows: bad IDX files, a cache file failing its digest, bad downloads.

Every fault is an :class:`~stablecnn.errors.DataError` (``IdxError``, ``ChecksumError``,
``SourceError``) whose message starts with the file or URL at fault and says what is wrong; no
source ever writes an unverified byte into the cache.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import struct
import threading
import time

import numpy as np
import pytest
from support.fakes import idx_bytes

from stablecnn.data import IdxError, SourceError, load_dataset, read_idx, specs, write_idx
from stablecnn.data.sources import fetch_from_mirrors
from stablecnn.errors import DataError

IMAGES = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
LABELS = np.array([3, 1, 4, 1, 5], np.uint8)


def refused(path, *fragments, error=IdxError):
    """Assert ``read_idx(path)`` raises ``error`` starting with the path, naming each fragment."""
    with pytest.raises(error) as info:
        read_idx(path)
    text = str(info.value)
    assert text.startswith(str(path)), text
    for fragment in fragments:
        assert fragment in text, text
    return text


# -- the IDX files ---------------------------------------------------------------------------------
def test_idx_truncated(tmp_path):
    data = idx_bytes(IMAGES)
    header = tmp_path / "header-cut"
    header.write_bytes(data[:10])
    refused(header, "truncated header: 10 bytes, 16 needed for 3 dimension(s)")
    payload = tmp_path / "payload-cut"
    payload.write_bytes(data[:-100])
    refused(
        payload,
        "truncated payload: the header promises 3920 bytes (images 5 x 28 x 28), "
        "the file holds 3820",
    )
    gz = tmp_path / "cut.gz"
    gz.write_bytes(gzip.compress(data)[:-30])
    refused(gz, "gzip data is truncated or corrupt")


def test_idx_garbled(tmp_path):
    gz = tmp_path / "garbled.gz"
    blob = bytearray(gzip.compress(idx_bytes(IMAGES)))
    blob[len(blob) // 2 : len(blob) // 2 + 8] = b"\xde\xad\xbe\xef" * 2
    gz.write_bytes(bytes(blob))
    refused(gz, "gzip data is truncated or corrupt")
    noise = tmp_path / "noise"
    noise.write_bytes(np.random.default_rng(1).bytes(500))
    refused(noise, "wrong magic number")


def test_idx_empty(tmp_path):
    empty = tmp_path / "train-images-idx3-ubyte"
    empty.write_bytes(b"")
    refused(empty, "truncated header: 0 byte(s), no room for a magic number")
    empty_gz = tmp_path / "train-images-idx3-ubyte.gz"
    empty_gz.write_bytes(gzip.compress(b""))
    refused(empty_gz, "truncated header: 0 byte(s)")


def test_idx_wrong_magic(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(struct.pack(">II", 0x00000802, 5) + LABELS.tobytes())  # signed-byte kind
    refused(
        path, "wrong magic number 0x00000802: expected 0x00000803 (images) or 0x00000801 (labels)"
    )
    html = tmp_path / "page.html"
    html.write_bytes(b"<!DOCTYPE html><html>Not Found</html>")
    refused(html, "wrong magic number 0x3c21444f")


def test_idx_dims_disagree_with_payload(tmp_path):
    more = tmp_path / "says-6"
    more.write_bytes(struct.pack(">IIII", 0x803, 6, 28, 28) + IMAGES.tobytes())
    refused(more, "header promises 4704 bytes (images 6 x 28 x 28), the file holds 3920")
    fewer = tmp_path / "says-4"
    fewer.write_bytes(struct.pack(">IIII", 0x803, 4, 28, 28) + IMAGES.tobytes())
    refused(fewer, "784 trailing byte(s) after the 3136-byte payload")
    other_size = tmp_path / "27x28"
    other_size.write_bytes(struct.pack(">IIII", 0x803, 5, 27, 28) + IMAGES.tobytes()[:3780])
    refused(other_size, "images are 27x28, expected 28x28")
    huge = tmp_path / "forged"  # 4 billion images promised: refused without allocating them
    huge.write_bytes(struct.pack(">IIII", 0x803, 2**32 - 1, 28, 28) + IMAGES.tobytes())
    refused(huge, "truncated payload")
    # a pair whose counts differ, in a folder of the user's own files
    write_idx(tmp_path / "t10k-images-idx3-ubyte", IMAGES)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", LABELS[:4])
    with pytest.raises(
        IdxError,
        match=r"t10k-images-idx3-ubyte holds 5 images but "
        r".*t10k-labels-idx1-ubyte holds 4 labels",
    ):
        load_dataset("mnist", "test", data_dir=tmp_path, verify=False, quiet=True)


def test_idx_labels_out_of_range(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    bad = LABELS.copy()
    bad[3] = 10
    path.write_bytes(idx_bytes(bad))
    refused(path, "label 10 at index 3 is above 9")


# -- the cache and the downloads -------------------------------------------------------------------
class Mirror(http.server.ThreadingHTTPServer):
    """A local download mirror: ``/good/`` serves the files, ``/html/`` a 200 HTML page,
    ``/stall/`` the first bytes and then nothing."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]):
        self.files, self.release = files, threading.Event()
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), Handler)

    def url(self, kind):
        return f"http://127.0.0.1:{self.server_address[1]}/{kind}/"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        kind, _, name = self.path.strip("/").partition("/")
        self.server.requests.append(self.path)
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        if kind == "html":
            data = b"<!DOCTYPE html><html><body>Please log in to the Wi-Fi</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if kind == "html" else "application/gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if kind == "stall":
            self.wfile.write(data[:10])
            self.wfile.flush()
            self.server.release.wait(10)  # then nothing more, until the test ends
            return
        self.wfile.write(data)


@pytest.fixture
def mirror(monkeypatch, cache_root):
    """A tiny 'mnist' whose pinned digests are those of generated files, served locally."""
    arrays = {
        "train-images": IMAGES,
        "train-labels": LABELS,
        "t10k-images": IMAGES[:2],
        "t10k-labels": LABELS[:2],
    }
    files, served = {}, {}
    for key, fspec in specs.MNIST.files.items():
        raw = idx_bytes(arrays[key])
        served[fspec.gz_name] = gzip.compress(raw, mtime=0)
        files[key] = dataclasses.replace(
            fspec, sha256=hashlib.sha256(raw).hexdigest(), count=len(arrays[key]), gz_sha256=None
        )
    server = Mirror(served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # the offline fallback is a folder that does not exist: no pip, no network
    spec = dataclasses.replace(
        specs.MNIST,
        files=files,
        mirrors=(server.url("good"),),
        fallback=specs.DebianFallback("none", str(cache_root / "absent")),
    )
    monkeypatch.setitem(specs.SPECS, "mnist", spec)
    server.spec, server.raw = spec, {k: idx_bytes(a) for k, a in arrays.items()}
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def test_cache_digest_fails_refetched_not_trusted(mirror, cache_root, capsys):
    load_dataset("mnist", "train", quiet=True)  # fills the cache from the mirror
    path = cache_root / "mnist" / "train-labels-idx1-ubyte"
    forged = LABELS.copy()
    forged[0] = 9  # still a well-formed label file: only the digest can tell
    path.write_bytes(idx_bytes(forged))
    before = len(mirror.requests)
    images, labels = load_dataset("mnist", "train", quiet=True)
    np.testing.assert_array_equal(labels, LABELS)  # the canonical labels, not the forged ones
    err = capsys.readouterr().err
    assert f"cached file failed verification, fetching it again: {path}: SHA-256" in err
    assert mirror.requests[before:] == ["/good/train-labels-idx1-ubyte.gz"]  # only that file
    assert path.read_bytes() == mirror.raw["train-labels"]
    assert temp_names(cache_root) == []


def temp_names(root):
    return sorted(p.name for p in root.rglob(".*.tmp"))


def test_download_stalls(mirror, cache_root, monkeypatch):
    import stablecnn.data.datasets as datasets

    spec = dataclasses.replace(mirror.spec, mirrors=(mirror.url("stall"),))
    monkeypatch.setitem(specs.SPECS, "mnist", spec)
    monkeypatch.setattr(
        datasets,
        "fetch_from_mirrors",  # the default read timeout is 5 s
        lambda *a, **k: fetch_from_mirrors(*a, **{**k, "timeout": 0.5}),
    )
    t0 = time.monotonic()
    with pytest.raises(SourceError) as info:
        load_dataset("mnist", "train", quiet=True)
    assert time.monotonic() - t0 < 5  # the read timeout ends the wait, not the server
    host = mirror.url("stall").split("/")[2]
    text = str(info.value)
    assert text.startswith(
        "could not get mnist (train-images-idx3-ubyte, train-labels-idx1-ubyte) from any source"
    )
    assert f"download mirrors failed: {host}: unreachable (timed out)" in text
    assert "offline fallback" in text  # the next source was tried too
    assert not (cache_root / "mnist").exists()  # nothing cached, no partial file, no folder


def test_download_returns_html_instead_of_gzip(mirror, cache_root):
    spec = dataclasses.replace(mirror.spec, mirrors=(mirror.url("html"),))
    dest = cache_root / "mnist"
    with pytest.raises(SourceError) as info:
        fetch_from_mirrors(spec, ["train-images"], dest, quiet=True)
    url = mirror.url("html") + "train-images-idx3-ubyte.gz"
    assert (
        f"download mirrors failed: {url}: the server sent text/html, not gzip data "
        f"(it starts with b'<!DOCTYPE html><')"
    ) in str(info.value)
    assert list(dest.iterdir()) == []
    assert isinstance(info.value, DataError)
