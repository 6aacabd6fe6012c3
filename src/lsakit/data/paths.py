"""Where data files live: the data directory, the candidate directories of a data set, file lookup.

Resolution order of the data directory (first that is set wins):

1. the explicit ``data_dir`` argument (the CLI's ``--data-dir``);
2. the environment variable ``LSAKIT_DATA``;
3. a per-user cache, ``$XDG_CACHE_HOME/lsakit/data`` or ``~/.cache/lsakit/data``.

Each data set has its own sub-directory under it (``mnist/``, ``fashion-mnist/``, ``cifar10/``),
which is also where downloads go. Some data sets have extra read-only candidate directories that
are searched after it, e.g. Debian's ``dataset-fashion-mnist`` package.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lsakit.data.download import download as fetch
from lsakit.errors import DataError

#: Environment variable naming the data directory (step 2 of the resolution order).
DATA_ENV = "LSAKIT_DATA"

#: Read-only directories searched after ``<data dir>/<subdir>``, per data set sub-directory.
EXTRA_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}


def default_data_dir() -> Path:
    """The per-user cache directory, honouring ``XDG_CACHE_HOME`` when it is an absolute path.

    The XDG Base Directory specification says relative values must be ignored, hence the check.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return cache / "lsakit" / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: explicit ``data_dir``, else ``$LSAKIT_DATA``, else the user cache.

    An empty ``LSAKIT_DATA`` counts as unset, so ``LSAKIT_DATA= cmd`` falls back to the default.
    ``~`` is expanded in both the argument and the variable.

    Args:
        data_dir: the explicit data directory (the CLI's ``--data-dir``); None: not given.

    Returns:
        The data directory, ``~`` expanded; it is neither created nor checked to exist.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def candidate_dirs(subdir: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched for a data set's files, in order; the first is where downloads go."""
    return [resolve_data_dir(data_dir) / subdir, *EXTRA_DIRS.get(subdir, ())]


def find_file(names: Sequence[str], dirs: Sequence[Path]) -> Path | None:
    """The first existing regular file among ``names`` in ``dirs`` (directory order first)."""
    for directory in dirs:
        for name in names:
            path = directory / name
            if path.is_file():
                return path
    return None


def describe_names(alternatives: Sequence[str]) -> str:
    """How a file with alternative names is shown: ``a[.gz]`` for a file and its gzipped form."""
    if len(alternatives) == 2 and alternatives[1] == alternatives[0] + ".gz":
        return f"{alternatives[0]}[.gz]"
    return " or ".join(alternatives)


def missing_message(
    dataset: str, looked_for: Sequence[str], dirs: Sequence[Path], *, download: bool
) -> str:
    """One line: which files were looked for in which directories, and how to supply them."""
    where = ", ".join(str(d) for d in dirs)
    message = (
        f"{dataset} files not found: looked for {', '.join(looked_for)} in {where}; put them in "
        f"{dirs[0]}, or set {DATA_ENV} / --data-dir to a directory holding {dirs[0].name}/"
    )
    if not download:
        message += ", or allow download (download=True)"
    return message


def locate(
    dataset: str,
    files: Sequence[Sequence[str]],
    dirs: Sequence[Path],
    *,
    download: bool,
    progress: bool = True,
    also_looked_for: Sequence[str] = (),
) -> list[Path]:
    """Find each file (given as its alternative names) in ``dirs``; download the missing ones.

    A missing file is downloaded under its LAST alternative name (the official archive) into
    ``dirs[0]``. Local files are taken as they are, without a checksum: re-compressed copies (e.g.
    the shared MNIST ``.gz`` files) differ from the official archives but parse identically, and a
    corrupt one fails to parse with an error naming it.

    Raises :class:`~lsakit.errors.DataError` naming the files and directories when a file is
    missing and ``download`` is False, or when its download fails.
    """
    found = [find_file(alternatives, dirs) for alternatives in files]
    missing = [alts for alts, path in zip(files, found, strict=True) if path is None]
    if not missing:
        return [path for path in found if path is not None]
    looked_for = [*also_looked_for, *(describe_names(alts) for alts in missing)]
    if not download:
        raise DataError(missing_message(dataset, looked_for, dirs, download=False))
    for alternatives in missing:
        try:
            fetch(dataset, alternatives[-1], dirs[0], progress=progress)
        except DataError as exc:
            where = ", ".join(str(d) for d in dirs)
            raise DataError(
                f"{exc} (looked for {', '.join(looked_for)} in {where}; {DATA_ENV} or --data-dir "
                f"can point to a directory holding {dirs[0].name}/ instead)"
            ) from exc
    return locate(dataset, files, dirs, download=False)
