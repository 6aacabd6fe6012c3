"""Shared fixtures: seeded torch, the location of the real MNIST, and one Moon reproduction (smoke
profile) per protocol that the tests checking such a run share."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from lsakit.experiments import ExperimentResult

# One intra-op thread per test process: `make test` runs two xdist workers on two cores, and
# oversubscribed OpenMP threads make small models up to 100× slower (measured: 2 ms vs 390 ms a
# step of model A). Results do not depend on the thread count beyond float tolerance.
torch.set_num_threads(1)
# ... and in the Pythons the tests start (`python -m lsakit …` without --threads): 20 epochs of
# model A on Moon through the CLI took 48 s with torch's default threads beside a busy worker,
# 15 s with one (measured). A test that sets the variable itself still wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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


def _moon_smoke(
    factory: pytest.TempPathFactory, protocol: str | None
) -> tuple[ExperimentResult, Path]:
    from lsakit.experiments import run_experiment

    out = factory.mktemp(f"moon-smoke-{protocol or 'strict'}")
    return run_experiment("moon", "smoke", out, protocol=protocol), out


@pytest.fixture(scope="session")
def moon_smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResult, Path]:
    """THE Moon reproduction of the test session: smoke profile (17 rows × 1 seed, 1 epoch each),
    default (strict) protocol, in this process (one thread); its result and results folder.

    Computed once per test process, for every test that checks such a run. The folder is shared:
    read it, or copy it (``shutil.copytree``) to a test's own folder to write there.
    """
    return _moon_smoke(tmp_path_factory, None)


@pytest.fixture(scope="session")
def moon_smoke_paper(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResult, Path]:
    """:func:`moon_smoke` under the paper protocol (``protocol="paper"``)."""
    return _moon_smoke(tmp_path_factory, "paper")
