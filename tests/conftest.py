"""Shared fixtures: seeded torch, small hand-built models, the location of the real MNIST."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

# One intra-op thread per test process: `make test` runs two xdist workers on two cores, and
# oversubscribed OpenMP threads make small models up to 100× slower (measured: 2 ms vs 390 ms a
# step of model A). Results do not depend on the thread count beyond float tolerance.
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    """In the xdist controller (or a plain run), before any worker starts: import ART once.

    ART writes ``~/.art/config.json`` on its first import; two workers importing it at once on a
    fresh machine race (one sees the file appear between two checks and fails collection with
    ``NameError: name '_config' is not defined``; seen on a new machine here). One import in the
    controller creates the file first, only while it is missing (the import costs ~1.7 s).
    """
    if not hasattr(config, "workerinput") and not (Path.home() / ".art" / "config.json").exists():
        with contextlib.suppress(ImportError):
            import art  # noqa: F401


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The directory holding the real MNIST (``<dir>/mnist``); skip with the reason when absent."""
    path = Path(os.environ.get("LSAKIT_TEST_DATA", SHARED_DATA))
    if not (path / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found under {path}/mnist (set LSAKIT_TEST_DATA)")
    return path
