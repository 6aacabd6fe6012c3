"""lsakit.data downloads against a local HTTP server: checksums, atomic writes, clear errors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from lsakit import data
from lsakit.data import download as dl
from lsakit.errors import DataError

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_gz(array: np.ndarray) -> bytes:
    """A gzipped ubyte IDX file (magic 0x0000 0x08 <ndim>, big-endian dims, values)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


@dataclass
class Server:
    """A local HTTP server over ``root``; ``requests`` records the paths asked for."""

    root: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path.endswith("/short"):
            # Announces more than it sends, then hangs up: a transfer cut off mid-way.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only a few bytes")
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest output clean


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    state = Server(root)
    handler = functools.partial(
        type("Handler", (_Handler,), {"requests": state.requests}), directory=str(root)
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def serve_mnist(server: Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """Tiny MNIST archives under ``<root>/mnist/``, registered with their SHA-256 checksums."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": np.array([5, 0, 4, 1], np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": np.array([7, 2], np.uint8),
    }
    (server.root / "mnist").mkdir()
    for name, array in arrays.items():
        content = idx_gz(array)
        (server.root / "mnist" / name).write_bytes(content)
        digest = hashlib.sha256(content).hexdigest()
        monkeypatch.setitem(dl.CHECKSUMS, ("mnist", name), dl.Checksum("sha256", digest))
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    return arrays


def test_missing_files_are_downloaded_verified_and_loaded(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = serve_mnist(server, monkeypatch)
    x, y = data.load_tensors("mnist", "test", data_dir=tmp_path / "data")
    assert y.tolist() == [7, 2]
    expected = arrays["t10k-images-idx3-ubyte.gz"].astype(np.float32) / np.float32(255)
    assert torch.equal(x[:, 0], torch.from_numpy(expected))
    # Only the split's files were fetched, from <mirror>/<data set>/<file>, and nothing else left.
    assert server.requests == [
        "/mnist/t10k-images-idx3-ubyte.gz",
        "/mnist/t10k-labels-idx1-ubyte.gz",
    ]
    stored = sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir())
    assert stored == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # A second load uses the stored files.
    data.load_tensors("mnist", "test", data_dir=tmp_path / "data")
    assert len(server.requests) == 2


def test_download_writes_nothing_to_stdout(
    tmp_path: Path,
    server: Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    serve_mnist(server, monkeypatch)
    dl.download("mnist", "t10k-labels-idx1-ubyte.gz", tmp_path, progress=True)
    assert capsys.readouterr().out == ""


def test_base_url_argument_wins_over_the_mirror(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_mnist(server, monkeypatch)
    monkeypatch.setenv(dl.MIRROR_ENV, "http://127.0.0.1:9/unused")
    path = dl.download(
        "mnist", "train-labels-idx1-ubyte.gz", tmp_path, base_url=f"{server.url}/mnist/"
    )
    assert path == tmp_path / "train-labels-idx1-ubyte.gz"
    assert gzip.decompress(path.read_bytes())[8:] == bytes([5, 0, 4, 1])


def test_source_url_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    assert (
        dl.source_url("mnist", "t10k-images-idx3-ubyte.gz")
        == "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz"
    )
    assert (
        dl.source_url("cifar10", "cifar-10-python.tar.gz")
        == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )
    monkeypatch.setenv(dl.MIRROR_ENV, "http://mirror.example/data/")
    assert dl.source_url("fashion-mnist", "f.gz") == "http://mirror.example/data/fashion-mnist/f.gz"
    assert dl.source_url("mnist", "f.gz", base_url="http://b/x") == "http://b/x/f.gz"


def test_official_checksums_are_in_the_table() -> None:
    assert dl.CHECKSUMS[("cifar10", "cifar-10-python.tar.gz")] == dl.Checksum(
        "md5", "c58f30108f718f92721af3b95e74349a"
    )
    for dataset in ("mnist", "fashion-mnist"):
        for name in MNIST_FILES:
            checksum = dl.CHECKSUMS[(dataset, name)]
            assert checksum.algorithm == "md5" and re.fullmatch(r"[0-9a-f]{32}", checksum.hexdigest)


def test_checksum_mismatch_raises_and_leaves_nothing(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_mnist(server, monkeypatch)
    served = server.root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    corrupted = bytearray(served.read_bytes())
    corrupted[20] ^= 0xFF
    served.write_bytes(bytes(corrupted))
    actual = hashlib.sha256(served.read_bytes()).hexdigest()
    expected = dl.CHECKSUMS[("mnist", "t10k-labels-idx1-ubyte.gz")].hexdigest
    target = tmp_path / "data" / "mnist"
    with pytest.raises(DataError) as caught:
        dl.download("mnist", "t10k-labels-idx1-ubyte.gz", target)
    message = str(caught.value)
    assert "checksum" in message and expected in message and actual in message
    assert f"{server.url}/mnist/t10k-labels-idx1-ubyte.gz" in message and "\n" not in message
    assert list(target.iterdir()) == []  # neither the final file nor the temporary one


def test_checksum_mismatch_through_load_names_the_searched_directories(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_mnist(server, monkeypatch)
    monkeypatch.setitem(
        dl.CHECKSUMS, ("mnist", "t10k-images-idx3-ubyte.gz"), dl.Checksum("md5", "0" * 32)
    )
    with pytest.raises(DataError, match="checksum") as caught:
        data.load_tensors("mnist", "test", data_dir=tmp_path / "data")
    assert "looked for t10k-images-idx3-ubyte[.gz]" in str(caught.value)
    assert str(tmp_path / "data" / "mnist") in str(caught.value)
    assert list((tmp_path / "data" / "mnist").iterdir()) == []


def test_http_404_raises_and_leaves_nothing(tmp_path: Path, server: Server) -> None:
    target = tmp_path / "target"
    with pytest.raises(DataError, match=r"HTTP 404.*mirror"):
        dl.download("mnist", "t10k-images-idx3-ubyte.gz", target, base_url=server.url)
    assert list(target.iterdir()) == []


def test_transfer_cut_short_raises_and_leaves_nothing(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(dl.CHECKSUMS, ("mnist", "short"), dl.Checksum("md5", "0" * 32))
    target = tmp_path / "target"
    with pytest.raises(
        DataError, match=r"download of .*/short failed \(cut short after 16 of 1000 bytes\)"
    ):
        dl.download("mnist", "short", target, base_url=server.url)
    assert list(target.iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_says_what_was_looked_for_and_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(dl.MIRROR_ENV, f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(DataError) as caught:
        data.load_tensors("mnist", "train", data_dir=tmp_path)
    message = str(caught.value)
    assert "failed" in message and "train-images-idx3-ubyte[.gz]" in message
    assert "train-labels-idx1-ubyte[.gz]" in message and str(tmp_path / "mnist") in message
    assert "LSAKIT_DATA" in message and "\n" not in message
    assert list((tmp_path / "mnist").iterdir()) == []


def test_download_false_never_contacts_the_server(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_mnist(server, monkeypatch)
    with pytest.raises(DataError) as caught:
        data.load_tensors("mnist", "train", data_dir=tmp_path / "data", download=False)
    message = str(caught.value)
    assert "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]" in message
    assert str(tmp_path / "data" / "mnist") in message and "download=True" in message
    assert server.requests == []


def test_unwritable_target_raises_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError, match="cannot write to"):
        dl.download("mnist", "t10k-images-idx3-ubyte.gz", blocker / "mnist")


def test_file_without_a_known_checksum_is_not_downloaded(tmp_path: Path, server: Server) -> None:
    with pytest.raises(DataError, match="no published checksum"):
        dl.download("mnist", "unknown.gz", tmp_path, base_url=server.url)
    assert server.requests == []


def test_cifar_archive_is_downloaded_and_read(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8)
    batch = pickle.dumps({b"data": rows, b"labels": [3, 8]}, protocol=2)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        member = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        member.size = len(batch)
        tar.addfile(member, io.BytesIO(batch))
    (server.root / "cifar10").mkdir()
    (server.root / "cifar10" / "cifar-10-python.tar.gz").write_bytes(archive.getvalue())
    digest = hashlib.md5(archive.getvalue()).hexdigest()
    monkeypatch.setitem(
        dl.CHECKSUMS, ("cifar10", "cifar-10-python.tar.gz"), dl.Checksum("md5", digest)
    )
    monkeypatch.setenv(dl.MIRROR_ENV, server.url)
    x, y = data.load_tensors("cifar10", "test", data_dir=tmp_path)
    assert y.tolist() == [3, 8] and x.shape == (2, 3, 32, 32)
    assert float(x[1, 0, 0, 0]) == float(np.float32(3072 % 256) / np.float32(255))
    assert (tmp_path / "cifar10" / "cifar-10-python.tar.gz").is_file()
    assert server.requests == ["/cifar10/cifar-10-python.tar.gz"]
