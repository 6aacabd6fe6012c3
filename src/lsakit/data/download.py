"""Downloading data files from their official locations, with checksum verification.

A file is streamed into a temporary file *in the target directory* while its digest is computed,
checked against :data:`CHECKSUMS`, and only then moved under its final name with
:func:`os.replace` (atomic on one file system). On any failure the temporary file is deleted, so a
half-written or corrupt file never sits under the final name.

Where the files come from, first that is set wins:

1. the ``base_url`` argument: ``<base_url>/<file name>``;
2. the environment variable ``LSAKIT_DATA_MIRROR``: ``<mirror>/<data set>/<file name>`` (one
   mirror serves every data set; MNIST and Fashion-MNIST share file names, hence the sub-folder);
3. :data:`BASE_URLS`, the official locations.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lsakit import _progress as lsakit_progress
from lsakit.errors import DataError

#: Environment variable naming a mirror that serves ``<mirror>/<data set>/<file name>``.
MIRROR_ENV = "LSAKIT_DATA_MIRROR"

#: Official download locations, per data set.
BASE_URLS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
}

_CHUNK_BYTES = 1 << 20
#: Seconds without data before a download is abandoned.
_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Checksum:
    """A published digest of an archive: ``algorithm`` is a :mod:`hashlib` name."""

    algorithm: str
    hexdigest: str


#: Digests of the official archives, keyed by (data set, file name). Only MD5 is published for
#: these (by the data set authors and torchvision); they guard against corruption, not forgery.
CHECKSUMS: dict[tuple[str, str], Checksum] = {
    ("mnist", "train-images-idx3-ubyte.gz"): Checksum("md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("mnist", "train-labels-idx1-ubyte.gz"): Checksum("md5", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("mnist", "t10k-images-idx3-ubyte.gz"): Checksum("md5", "9fb629c4189551a2d022fa330f9573f3"),
    ("mnist", "t10k-labels-idx1-ubyte.gz"): Checksum("md5", "ec29112dd5afa0611ce80d1b7f02629c"),
    ("fashion-mnist", "train-images-idx3-ubyte.gz"): Checksum(
        "md5", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    ),
    ("fashion-mnist", "train-labels-idx1-ubyte.gz"): Checksum(
        "md5", "25c81989df183df01b3e8a0aad5dffbe"
    ),
    ("fashion-mnist", "t10k-images-idx3-ubyte.gz"): Checksum(
        "md5", "bef4ecab320f06d8554ea6380940ec79"
    ),
    ("fashion-mnist", "t10k-labels-idx1-ubyte.gz"): Checksum(
        "md5", "bb300cfdad3c16e7a12a480ee83cd310"
    ),
    ("cifar10", "cifar-10-python.tar.gz"): Checksum("md5", "c58f30108f718f92721af3b95e74349a"),
}


def source_url(dataset: str, filename: str, base_url: str | None = None) -> str:
    """The URL a data set's file is downloaded from (see the module docstring for the order)."""
    if base_url is None:
        mirror = os.environ.get(MIRROR_ENV, "")
        base_url = f"{mirror.rstrip('/')}/{dataset}/" if mirror else BASE_URLS[dataset]
    return f"{base_url.rstrip('/')}/{filename}"


class _CutShortError(OSError):
    """The server closed the connection before sending the announced number of bytes."""


def _progress_bar(enabled: bool) -> Any:
    """Rich's bar, or in a notebook lsakit's (both take ``add_task`` and ``advance`` alike)."""
    # stderr, so a command that prints JSON results on stdout stays parseable.
    console = Console(stderr=True)
    if console.is_jupyter:  # lsakit's own output, updated in place (rich's needs ipywidgets)
        return lsakit_progress.Progress(enabled, console=console)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )


def _stream_to(url: str, fd: int, algorithm: str, progress: bool) -> str:
    """Write the body at ``url`` into the open file descriptor ``fd``; return the body's digest."""
    # Not for security (MD5 is what is published), which FIPS-mode builds require to be said.
    digest = hashlib.new(algorithm, usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "lsakit"})
    # The file is opened first so that its descriptor is closed even when the request fails.
    with (
        os.fdopen(fd, "wb") as sink,
        urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response,
        _progress_bar(progress) as bar,
    ):
        header = response.headers.get("Content-Length")
        expected = int(header) if header and header.isdigit() else None
        task = bar.add_task(url.rsplit("/", 1)[-1], total=expected, unit="bytes")
        received = 0
        for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
            sink.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.advance(task, len(chunk))
    # http.client returns a short body silently when the connection drops mid-way.
    if expected is not None and received != expected:
        raise _CutShortError(f"cut short after {received} of {expected} bytes")
    return digest.hexdigest()


def download(
    dataset: str,
    filename: str,
    target_dir: Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
) -> Path:
    """Download ``filename`` of ``dataset`` into ``target_dir``, verify it, and return its path.

    Raises :class:`~lsakit.errors.DataError` (one line: the URL, what went wrong, what to do) on a
    network or HTTP error, a checksum mismatch, or an unwritable target directory; nothing is left
    behind in ``target_dir`` in any of these cases.
    """
    checksum = CHECKSUMS.get((dataset, filename))
    if checksum is None:
        raise DataError(
            f"no published checksum for {dataset}/{filename}; refusing an unverifiable download "
            f"— place the file in {target_dir} yourself"
        )
    url = source_url(dataset, filename, base_url)
    final = target_dir / filename
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{filename}.", suffix=".part")
    except OSError as exc:
        raise DataError(
            f"cannot write to {target_dir} to download {url} ({exc.strerror or exc}); "
            f"choose a writable data directory with LSAKIT_DATA or --data-dir"
        ) from exc
    temp = Path(temp_name)
    try:
        try:
            actual = _stream_to(url, fd, checksum.algorithm, progress)
        except urllib.error.HTTPError as exc:
            raise DataError(
                f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL or the "
                f"{MIRROR_ENV} mirror, or place {filename} in {target_dir} yourself"
            ) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataError(
                f"download of {url} failed ({reason}); check the network and retry, or place "
                f"{filename} in {target_dir} yourself"
            ) from exc
        if actual != checksum.hexdigest:
            raise DataError(
                f"checksum mismatch for {url}: expected {checksum.algorithm} {checksum.hexdigest}, "
                f"got {actual}; the download is corrupt or the server sends another file — retry, "
                f"or place the official {filename} in {target_dir} yourself"
            )
        os.replace(temp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    return final
