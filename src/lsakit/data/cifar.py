"""CIFAR-10 from the official ``cifar-10-batches-py`` pickle batches or ``cifar-10-python.tar.gz``.

Each batch is a Python 2 pickle of a dict with ``b"data"`` (N, 3072) uint8 — per row 1024 red,
then 1024 green, then 1024 blue values, each a row-major 32×32 plane, so a plain reshape gives
NCHW — and ``b"labels"``, a list of N ints in 0..9 (Krizhevsky, 2009,
https://www.cs.toronto.edu/~kriz/cifar.html).

A pickle can run arbitrary code when loaded, so batches are read with a restricted unpickler that
resolves only the few globals a numpy array needs; anything else is refused before it is called.
Members of the tar archive are read by their exact known names, never extracted by the names the
archive gives, so a crafted archive cannot write outside the data directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import pickle
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from lsakit.data.paths import locate
from lsakit.errors import DataError

BATCHES_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
BATCHES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
NUM_CLASSES = 10
_ROW_BYTES = 3 * 32 * 32

# numpy ≥ 2 moved the module; the official (numpy 1, Python 2) batches name the old one, which
# numpy 2 still imports but with a DeprecationWarning, so both names resolve to the present one.
_MULTIARRAY = (
    "numpy._core.multiarray"
    if importlib.util.find_spec("numpy._core") is not None
    else "numpy.core.multiarray"
)

#: (module, name) a CIFAR batch may reference → the module it is actually loaded from.
ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    ("numpy.core.multiarray", "_reconstruct"): _MULTIARRAY,
    ("numpy._core.multiarray", "_reconstruct"): _MULTIARRAY,
    ("numpy", "ndarray"): "numpy",
    ("numpy", "dtype"): "numpy",
    # Python 3 writes bytes in protocol < 3 as _codecs.encode(str, "latin1").
    ("_codecs", "encode"): "_codecs",
    **{
        (module, name): "builtins"
        for module in ("builtins", "__builtin__")
        for name in ("list", "dict", "tuple", "set", "frozenset", "bytearray")
    },
}


class _DataOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses everything else."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        actual = ALLOWED_GLOBALS.get((module, name))
        if actual is None:
            raise DataError(
                f"{self._source}: lsakit refuses to load code from a data file (the pickle "
                f"references {module}.{name}); a CIFAR batch holds only arrays and lists — the "
                f"file is corrupt or malicious, replace it with the official one"
            )
        return super().find_class(actual, name)


def unpickle_data(data: bytes, source: str) -> object:
    """Unpickle ``data`` (Python 2 strings become bytes) allowing only numpy arrays and builtins."""
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as exc:
        # Any failure inside a corrupt pickle (its opcodes drive arbitrary allowed constructors)
        # is a data problem; the broad catch keeps the message naming the file.
        raise DataError(
            f"{source} is not a readable CIFAR batch ({type(exc).__name__}: {exc}); it is corrupt "
            f"or truncated — replace it with the official file"
        ) from exc


def _field(batch: Mapping[Any, Any], key: str) -> Any:
    # Python 2 batches have bytes keys under encoding="bytes"; re-pickled ones may have str keys.
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    return None


def parse_batch(data: bytes, source: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from the bytes of one CIFAR batch."""
    batch = unpickle_data(data, source)

    def invalid(problem: str) -> DataError:
        return DataError(
            f"{source} is not a CIFAR-10 batch ({problem}); replace it with the official file"
        )

    if not isinstance(batch, Mapping):
        raise invalid(f"it holds a {type(batch).__name__}, not a dict")
    images, labels = _field(batch, "data"), _field(batch, "labels")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise invalid("no uint8 array under 'data'")
    if images.ndim != 2 or images.shape[1] != _ROW_BYTES:
        raise invalid(f"'data' has shape {images.shape}, expected (N, {_ROW_BYTES})")
    try:
        label_array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise invalid("'labels' is not a list of integers") from None
    if label_array.shape != (len(images),):
        raise invalid(f"{label_array.size} labels for {len(images)} images")
    if label_array.size and (label_array.min() < 0 or label_array.max() >= NUM_CLASSES):
        raise invalid(f"labels outside 0..{NUM_CLASSES - 1}")
    return images.reshape(-1, 3, 32, 32), label_array


def read_archive_members(archive: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The bytes of ``cifar-10-batches-py/<name>`` for each name, read from the tar archive.

    Members are matched by exact normalized name and must be regular files; nothing is written,
    so names in the archive cannot steer a write (no path traversal, no links).
    """
    wanted = {f"{BATCHES_DIR}/{name}": name for name in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = wanted.get(os.path.normpath(member.name))
                if name is None or not member.isfile():
                    continue
                extracted = tar.extractfile(member)
                if extracted is not None:
                    found[name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot read the archive {archive} ({exc or type(exc).__name__}); it is corrupt or "
            f"truncated — delete it so it is downloaded again, or replace it with the official one"
        ) from exc
    absent = [name for name in names if name not in found]
    if absent:
        raise DataError(
            f"the archive {archive} lacks {', '.join(f'{BATCHES_DIR}/{n}' for n in absent)}; "
            f"replace it with the official {ARCHIVE}"
        )
    return found


def _cache_batches(batches: Mapping[str, bytes], directory: Path) -> None:
    """Write batches read from the archive as plain files, so later loads skip decompression.

    Best effort: the data directory may be read-only, and the archive is still there to read.
    """
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        for name, content in batches.items():
            if (directory / name).is_file():
                continue
            fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(content)
                os.replace(temp, directory / name)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)


def _batch_bytes(
    split: str, dirs: list[Path], *, download: bool, progress: bool
) -> Iterator[tuple[bytes, str]]:
    """Yield (bytes, source) for each batch of the split: from a batches folder, else the archive.

    Directories are tried in order; a complete batches folder wins over an archive in the same
    directory. The archive is downloaded into ``dirs[0]`` when neither is found, and its batches
    are cached there as plain files once all of them were consumed.
    """
    names = BATCHES[split]
    for directory in dirs:
        folder = directory / BATCHES_DIR
        if all((folder / name).is_file() for name in names):
            for name in names:
                path = folder / name
                try:
                    content = path.read_bytes()
                except OSError as exc:
                    raise DataError(f"cannot read {path} ({exc.strerror or exc})") from exc
                yield content, str(path)
            return
    folder_files = f"{{{','.join(names)}}}" if len(names) > 1 else names[0]
    (archive,) = locate(
        "cifar10",
        [(ARCHIVE,)],
        dirs,
        download=download,
        progress=progress,
        also_looked_for=(f"{BATCHES_DIR}/{folder_files}",),
    )
    batches = read_archive_members(archive, names)
    for name in names:
        yield batches[name], f"{archive}:{BATCHES_DIR}/{name}"
    # Reached only once the caller has parsed every batch, so nothing corrupt is cached.
    _cache_batches(batches, dirs[0] / BATCHES_DIR)


def load_cifar10(
    split: str,
    dirs: list[Path],
    *,
    download: bool,
    limit: int | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images float32 (N, 3, 32, 32) in [0, 1] (uint8 / 255) and labels int64 (N,).

    With ``limit``, batches after the first ``limit`` samples are not parsed.
    """
    images: list[npt.NDArray[np.uint8]] = []
    labels: list[npt.NDArray[np.int64]] = []
    count = 0
    for content, source in _batch_bytes(split, dirs, download=download, progress=progress):
        batch_images, batch_labels = parse_batch(content, source)
        images.append(batch_images)
        labels.append(batch_labels)
        count += len(batch_labels)
        if limit is not None and count >= limit:
            break
    x = torch.from_numpy(np.concatenate(images)[:limit]).to(torch.float32).div_(255)
    y = torch.from_numpy(np.concatenate(labels)[:limit])
    return x, y
