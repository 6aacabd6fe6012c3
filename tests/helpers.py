"""Small hand-built models and tools shared by the tests (importable as ``helpers``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def tiny_mlp(seed: int = 0) -> nn.Sequential:
    """4 → 8 → 8 → 3 with ELU then ReLU: two activation modules, L0 and L1."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ELU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    """1×8×8 images → conv/BN/ReLU → pool → conv/ReLU → linear: three activation layers."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 10),
        nn.Tanh(),
        nn.Linear(10, 5),
    )


def attack_net(seed: int = 0, *, side: int = 3, classes: int = 4) -> nn.Sequential:
    """(N, 2, side, side) → ``classes`` logits, with BatchNorm and Dropout so eval mode matters."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(2 * side * side, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, classes),
    )


def attack_batch(
    seed: int = 0, n: int = 6, *, side: int = 3, classes: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in [0, 1] with exact 0s and 1s (so the [0, 1] clamp is exercised) and labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, side, side, generator=g)
    x[:, 0, 0, 0] = 0.0
    x[:, 1, side - 1, side - 1] = 1.0
    return x, torch.randint(0, classes, (n,), generator=g)


def modes(model: nn.Module) -> list[bool]:
    """Every submodule's training flag, to compare modes before and after a call."""
    return [m.training for m in model.modules()]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    from lsakit.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_output(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process without pytest's capture (e.g. inside a hypothesis test); return
    (exit code, stdout, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from lsakit.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exit_:
            code = int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    return code, out.getvalue(), err.getvalue()


class Interrupted(Exception):
    """Raised from ``on_epoch_end`` to cut a training run short, as a crash would."""


def train_one_epoch_then_stop(config: object, run_dir: object) -> None:
    """Train ``config`` into ``run_dir`` and interrupt it after epoch 1 (for resume tests)."""
    from lsakit.train import train

    def stop_after_first(epoch: int, record: dict[str, object]) -> None:
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, run_dir, on_epoch_end=stop_after_first)  # type: ignore[arg-type]


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Clean top-1 accuracy of ``model`` on one batch."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def unit_scaled(features: Any) -> Tensor:
    """A NumPy feature matrix mapped per column onto [0, 1]."""
    x = torch.tensor(features, dtype=torch.float32)
    return (x - x.min(0).values) / (x.max(0).values - x.min(0).values)


def train_mlp(x: Tensor, y: Tensor, classes: int, steps: int = 500) -> nn.Module:
    """A 2-64-64-C ReLU MLP trained full-batch with Adam (lr 2e-2), in eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, classes)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


def trained_moons(steps: int = 500) -> tuple[nn.Module, Tensor, Tensor]:
    """The MLP above on 300 make_moons points (noise 0.1) scaled to [0, 1]: ≈100 % clean."""
    from sklearn.datasets import make_moons

    features, labels = make_moons(n_samples=300, noise=0.1, random_state=0)
    x, y = unit_scaled(features), torch.tensor(labels)
    return train_mlp(x, y, 2, steps), x, y


def importable(package: str) -> bool:
    """Whether ``package`` imports here (timm is installed in some venvs without torchvision,
    and torchvision beside a torch it was not built for raises RuntimeError)."""
    import importlib

    try:
        importlib.import_module(package)
    except Exception:
        return False
    return True


def numerics_of_worker(payload: object, *needed: object) -> dict[str, Any]:
    """A grid job that reports how its worker computes (lsakit.numerics.describe())."""
    from lsakit import numerics

    return numerics.describe()


#: A headless Chromium for the tests that open HTML in a browser (None: they skip, saying why).
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((found for name in BROWSERS if (found := shutil.which(name))), None)
NO_BROWSER = (
    "no Chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it when "
    "apt-get can)"
)


def browser_dom(page: Path, profile: Path, width: int = 1280) -> subprocess.CompletedProcess[str]:
    """Open ``page`` in headless Chromium, ``width`` px wide, once its scripts have run; the
    finished run, whose stdout is the page's DOM (``--dump-dom``)."""
    assert BROWSER is not None
    return subprocess.run(
        [
            BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", f"--user-data-dir={profile}", f"--window-size={width},2000",
            "--virtual-time-budget=10000", "--dump-dom", page.as_uri(),
        ],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
