"""rnnkit.datasets.download against a local HTTP server on 127.0.0.1: good files, 404s,
truncated and wrong files, a connection closed mid-body, a silent server; never the internet."""

import gzip
import hashlib
import http.server
import socket
import threading
import time

import numpy as np
import pytest

from rnnkit.datasets import DownloadError, write_idx
from rnnkit.datasets.download import fetch
from rnnkit.datasets.mnist_format import FILES, DatasetSpec, read_spec_data_sets

NAME = "t10k-labels-idx1-ubyte.gz"
BODY = gzip.compress(np.random.default_rng(0).bytes(150_000), mtime=0)  # several chunks
MD5 = hashlib.md5(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` under a first path segment that says how to misbehave."""

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        self.server.requests.append(self.path)
        mode, _, name = self.path.strip("/").partition("/")
        body = self.server.files.get(name)
        if mode == "missing" or body is None:
            return self.send_error(404)
        if mode == "slow":
            time.sleep(1.0)
        length = len(body)
        body = {"short": body[:len(body) // 2], "wrong": body[::-1]}.get(mode, body)
        if mode == "short":
            length = len(body)  # a consistent but truncated response: only the MD5 notices
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        try:  # "cut" declares the full length, then closes the connection half way.
            self.wfile.write(body[:len(body) // 2] if mode == "cut" else body)
        except ConnectionError:  # the client gave up ("slow")
            pass
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.requests = {NAME: BODY}, []
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def dead_url():
    """A URL on 127.0.0.1 where nothing listens: bind a free port, then release it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def assert_nothing_left(folder):
    assert not folder.exists() or not list(folder.iterdir())


def test_fetch_from_a_good_mirror(server, tmp_path):
    path = fetch(NAME, MD5, [f"{server.url}/good"], tmp_path / "new")
    assert path == tmp_path / "new" / NAME and path.read_bytes() == BODY
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


@pytest.mark.parametrize("bad", ["missing", "short", "wrong", "cut"])
def test_a_failing_mirror_is_skipped_for_the_next(server, tmp_path, bad):
    path = fetch(NAME, MD5, [f"{server.url}/{bad}", f"{server.url}/good/"], tmp_path)
    assert path.read_bytes() == BODY and list(tmp_path.iterdir()) == [path]
    assert server.requests == [f"/{bad}/{NAME}", f"/good/{NAME}"]


@pytest.mark.parametrize("bad, reason", [
    ("missing", "HTTP 404"),
    ("short", f"of {len(BODY) // 2} bytes, expected {MD5}"),
    ("wrong", f"of {len(BODY)} bytes, expected {MD5}"),
    ("cut", f"connection closed after {len(BODY) // 2} of {len(BODY)} bytes"),
], ids=["missing", "short", "wrong", "cut"])
def test_a_bad_download_leaves_no_file(server, tmp_path, bad, reason):
    with pytest.raises(DownloadError) as excinfo:
        fetch(NAME, MD5, [f"{server.url}/{bad}"], tmp_path)
    message = str(excinfo.value)
    assert message.startswith(f"{NAME}: ") and f"{server.url}/{bad}/{NAME} (" in message
    assert reason in message and "\n" not in message
    assert_nothing_left(tmp_path)


def test_the_error_lists_every_mirror_and_why(server, tmp_path):
    mirrors = [f"{server.url}/missing", f"{server.url}/wrong", dead_url(), f"{server.url}/slow"]
    with pytest.raises(DownloadError) as excinfo:
        fetch(NAME, MD5, mirrors, tmp_path, timeout=0.3)
    message = str(excinfo.value)
    reasons = message.split(": ", 2)[-1].split("; ")
    assert [r.split(" (")[0] for r in reasons] == [m + "/" + NAME for m in mirrors]
    assert "HTTP 404" in reasons[0] and "MD5" in reasons[1]
    assert "refused" in reasons[2].lower() and "timed out" in reasons[3]
    assert_nothing_left(tmp_path)


def test_read_data_sets_downloads_the_missing_files_once(server, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    write_idx(source / FILES[0], np.zeros((12, 28, 28), np.uint8))
    write_idx(source / FILES[1], np.arange(12, dtype=np.uint8) % 10)
    write_idx(source / FILES[2], np.full((4, 28, 28), 255, np.uint8))
    write_idx(source / FILES[3], np.arange(4, dtype=np.uint8))
    server.files = {name: (source / name).read_bytes() for name in FILES}
    spec = DatasetSpec(name="mnist", title="MNIST", mirrors=(f"{server.url}/missing",
                                                             f"{server.url}/good"),
                       md5={n: hashlib.md5(b).hexdigest() for n, b in server.files.items()})
    target = tmp_path / "data"
    target.mkdir()
    write_idx(target / FILES[3].removesuffix(".gz"), np.arange(4, dtype=np.uint8))  # kept
    data, folder = read_spec_data_sets(spec, target, validation_size=2, download=True)
    assert folder == target and [s.num_examples for s in data] == [10, 2, 4]
    assert data.test.images.min() == 1.0
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [*FILES[:3], FILES[3].removesuffix(".gz")])
    assert len(server.requests) == 6  # three files, each a 404 then a good mirror
    read_spec_data_sets(spec, target, validation_size=2, download=True)
    assert len(server.requests) == 6  # nothing fetched the second time
