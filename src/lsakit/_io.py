"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename onto ``path``.

    On any error (including KeyboardInterrupt) the temporary file is removed and an existing file
    at ``path`` is left untouched. Parent directories are created.

    The temporary is ``.{name}.tmp-`` plus mkstemp's random suffix, in ``path``'s directory. A writer killed before the
    rename (SIGKILL, power loss) cannot remove it, so each successful call also deletes the
    leftovers of earlier calls for the same ``path`` (:func:`_remove_stale_temps`). Hence
    concurrent writers of one ``path`` are not supported: one could delete the other's
    temporary mid-write and make it fail. Writers of different paths do not interfere.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target), dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp creates the file 0600 (and a writer may replace it with its own file); give it
        # the mode a plain open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _remove_stale_temps(target, keep=tmp)
    _fsync_dir(target.parent)
    return target


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def _remove_stale_temps(target: Path, keep: Path) -> None:
    """Delete ``.{target.name}.tmp-*`` files beside ``target`` other than ``keep``: temporaries of
    killed writers of ``target``. Best effort: a file that vanishes or cannot be deleted, or a
    directory that cannot be listed, is skipped (the write itself has already succeeded)."""
    prefix = _temp_prefix(target)
    stale: list[str] = []
    with contextlib.suppress(OSError), os.scandir(target.parent) as entries:
        stale = [
            entry.path
            for entry in entries
            if entry.name.startswith(prefix)
            # mkstemp's random part has no dot: ".a.tmp-x.tmp-1234" is a temporary of "a.tmp-x"
            and "." not in entry.name[len(prefix) :]
            and entry.name != keep.name
            and entry.is_file(follow_symlinks=False)
        ]
    for stale_path in stale:
        with contextlib.suppress(OSError):  # gone already (a race) or not ours to delete
            os.unlink(stale_path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (for the one-line errors of file readers)."""
    return " ".join(str(err).split()) or type(err).__name__


def load_torch_file(path: Path, error: Callable[[str], Exception], hint: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only,
    never code. Any failure raises ``error(message)`` with a one-line message ending in ``hint``
    (how to save a file lsakit reads)."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(
            f"{path} holds objects beyond tensors and plain containers ({one_line(err)[:160]}); "
            f"lsakit never unpickles code: {hint}"
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as err:
        raise error(
            f"{path} is not a readable torch file ({one_line(err)[:160]}); {hint}"
        ) from None
