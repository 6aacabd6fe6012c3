"""MNIST and Fashion-MNIST from their IDX files, gzipped or not.

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <type code> <number of dimensions>``, one big-endian uint32 per dimension, then the
values in row-major order, big-endian. MNIST and Fashion-MNIST images are ubyte (N, 28, 28),
labels ubyte (N,). Files are parsed with numpy; nothing is trusted without a size check.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from lsakit.data.paths import locate
from lsakit.errors import DataError

#: IDX type code → numpy dtype (multi-byte values are big-endian).
IDX_DTYPES: dict[int, np.dtype[np.generic]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

#: Per split, the IDX file stems (images, labels); each may also be found gzipped.
IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SIZE = 28
NUM_CLASSES = 10


def read_file_bytes(path: Path) -> bytes:
    """The content of ``path``, decompressed when it is gzip (told by its magic, not its name)."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw
    except (OSError, EOFError, zlib.error) as exc:
        # gzip.BadGzipFile is an OSError; EOFError means a truncated gzip stream.
        raise DataError(
            f"cannot read {path}: {exc or type(exc).__name__}; the file is corrupt or truncated "
            f"— delete it so it is downloaded again, or replace it with the official file"
        ) from exc


def parse_idx(data: bytes, source: str) -> npt.NDArray[np.generic]:
    """Parse the bytes of an IDX file; ``source`` names the file in error messages."""

    def corrupt(problem: str) -> DataError:
        return DataError(
            f"{source} is not a valid IDX file ({problem}); it is corrupt or truncated — delete "
            f"it so it is downloaded again, or replace it with the official file"
        )

    if len(data) < 4:
        raise corrupt(f"only {len(data)} bytes")
    if data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise corrupt(f"bad magic number 0x{data[:4].hex()}")
    dtype, ndim = IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise corrupt(f"header of {ndim} dimensions cut short at {len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise corrupt(f"shape {shape} needs {expected} bytes, the file has {len(data)}")
    # Native byte order so torch.from_numpy accepts the result.
    values = np.frombuffer(data, dtype=dtype, offset=header).astype(dtype.newbyteorder("="))
    return values.reshape(shape)


def read_idx(path: Path) -> npt.NDArray[np.generic]:
    """Read an IDX file (plain or gzipped) into a numpy array of its declared type and shape."""
    return parse_idx(read_file_bytes(path), str(path))


def idx_tensors(
    images_path: Path, labels_path: Path, *, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 (N, 1, 28, 28) in [0, 1] (ubyte / 255) and labels as int64 (N,).

    ``limit`` keeps the first ``limit`` samples before the float conversion, to save memory.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{images_path} holds {images.dtype} of shape {images.shape}, not 28×28 ubyte "
            f"images; replace it with the official file"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path} holds {labels.dtype} of shape {labels.shape}, not one ubyte label "
            f"per image of {images_path} ({len(images)}); replace them with the official files"
        )
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{labels_path} has label {int(labels.max())}, outside 0..{NUM_CLASSES - 1}; "
            f"replace it with the official file"
        )
    images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255)
    y = torch.from_numpy(labels).to(torch.int64)
    return x, y


def load_idx_dataset(
    dataset: str,
    split: str,
    dirs: list[Path],
    *,
    download: bool,
    limit: int | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of an MNIST-layout data set found in (or downloaded into) ``dirs``."""
    stems = IDX_FILES[split]
    images_path, labels_path = locate(
        dataset,
        [(stem, f"{stem}.gz") for stem in stems],
        dirs,
        download=download,
        progress=progress,
    )
    return idx_tensors(images_path, labels_path, limit=limit)
