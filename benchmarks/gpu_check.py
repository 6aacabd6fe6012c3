"""The GPU check: everything CUDA-specific about lsakit, in one call of at most ~8 minutes.

On a CUDA machine it runs, each part in its own process with its own time budget (a part that
fails, crashes or runs out of time is recorded and the next one runs):

* ``tests``: the CUDA-only tests (those under a ``skipif(not torch.cuda.is_available())``);
* ``amp``: ``--amp bf16|fp16`` attacks and training against float32 on the GPU;
* ``channels_last``: ``--channels-last`` training steps against the default layout;
* ``nccl``: a tiny ``lsakit train`` under ``torchrun --nproc_per_node=1`` (NCCL process group);
* ``throughput``: samples/s of AT-PGD-10 training steps, model B and PreActResNet-18, batch 256;
* ``attacks``: lsakit PGD-10 against torchattacks PGD-10 (skipped with a note without it);
* ``mnist``: epoch 1 of the MNIST fast-AT anchor (configs/mnist-fast-at.yaml), needs the data;
* ``compile``: ``--compile`` training against eager.

The tolerances are those of the CPU tests (tests/test_speed.py). Everything goes into one
Markdown file (``--out``, default benchmarks/gpu-check.md), rewritten after every part. Without
CUDA it prints one line and exits 0. Exit status: 0 when every part passed, 1 when one did not.

Run: ``make gpu-check`` (= ``bash benchmarks/gpu_check.sh``, which first makes lsakit's pure-Python
dependencies importable) or ``python3 benchmarks/gpu_check.py [--data-dir DIR] [--out FILE]
[--parts tests,amp,...] [--max-seconds 460]``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "gpu-check.md"
DEFAULT_MAX_SECONDS = 460  # the whole check; parts get min(own budget, what is left)
#: data directories tried in turn when --data-dir is not given (each holding mnist/)
DATA_CANDIDATES = (
    ROOT / ".gpu-data",
    ROOT.parent / "shared" / "data",
    Path.home() / ".cache" / "lsakit" / "data",
)


# --------------------------------------------------------------------------------------------
# What a part reports
# --------------------------------------------------------------------------------------------
class Report:
    """Checks (pass/fail), measurements and notes of one part, saved after every addition so a
    part killed at its time limit still leaves what it had."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"checks": [], "rows": [], "notes": [], "skipped": None}
        self.save()

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.data["checks"].append([name, bool(ok), detail])
        self.save()
        return ok

    def row(self, name: str, value: str, note: str = "") -> None:
        self.data["rows"].append([name, value, note])
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def skip(self, reason: str) -> None:
        self.data["skipped"] = reason
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data), encoding="utf-8")
        tmp.replace(self.path)


@dataclass(frozen=True)
class Part:
    title: str
    budget: int  # seconds
    run: Callable[[Report, argparse.Namespace], None]


def cuda_sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rel_close(a: float, b: float, rel: float) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def moons_config(**updates: Any) -> Any:
    """tests/test_speed.py's SMALL run: model A on 300 moons points, 2 epochs, batch 64."""
    from lsakit.config import TrainConfig

    base = TrainConfig(
        model="model_a", dataset="moons", epochs=2, batch_size=64, lr=1e-2,
        data_options={"n_samples": 300},
    )  # fmt: skip
    return base.model_copy(update=updates)


# --------------------------------------------------------------------------------------------
# Parts
# --------------------------------------------------------------------------------------------
def cuda_only_tests() -> list[str]:
    """Node ids of the tests marked to run only with CUDA: a ``skipif(not
    torch.cuda.is_available() …)`` decorator, maybe among others, right above the ``def``."""
    marker = re.compile(r"^@pytest\.mark\.skipif\(\s*not torch\.cuda\.is_available\(\)")
    ids = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        marked = False
        for line in path.read_text(encoding="utf-8").splitlines():
            if marker.match(line):
                marked = True
            elif marked and (found := re.match(r"def (test_\w+)", line)):
                ids.append(f"tests/{path.name}::{found.group(1)}")
                marked = False
            elif marked and not line.startswith(("@", " ", ")")):
                marked = False  # the decorator belonged to something else
    return ids


def part_tests(report: Report, args: argparse.Namespace) -> None:
    ids = cuda_only_tests()
    report.row("CUDA-only tests found", str(len(ids)), ", ".join(i.split("::")[1] for i in ids))
    if not ids:
        report.check("CUDA-only tests exist", False, "none found under tests/")
        return
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               f"--junitxml={junit}", *ids]  # fmt: skip
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(args.budget - 10, 10)
        )
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
        report.row("pytest", f"exit {proc.returncode}", tail[0])
        if not junit.exists():
            report.check("pytest ran", False, (proc.stdout + proc.stderr)[-500:])
            return
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            problem = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
            if problem is None:
                report.check(name, True, f"{float(case.get('time', 0)):.1f} s")
            else:
                message = (problem.get("message") or problem.text or "").strip().splitlines()
                report.check(name, False, f"{problem.tag}: {message[0] if message else ''}"[:300])


def part_amp(report: Report, args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from lsakit import models, speed
    from lsakit.perturb import FGSM, PGD
    from lsakit.train import train

    dev = torch.device(args.device)
    # Attacks (tests/test_speed.py::test_bf16_attacks_agree_with_full_precision, on model B)
    model = models.build("model_b").to(dev).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g).to(dev)
    y = torch.randint(0, 10, (64,), generator=g).to(dev)
    direction = FGSM(model, eps=0.0).direction(x, y)
    x_adv = PGD(model, eps=0.1, alpha=0.025, steps=5, seed=0)(x, y)
    with torch.no_grad():
        clean = float(F.cross_entropy(model(x), y))
        loss = float(F.cross_entropy(model(x_adv), y))
    for amp in ("bf16", "fp16"):
        with speed.attack_precision(amp):
            low = FGSM(model, eps=0.0).direction(x, y)
            x_low = PGD(model, eps=0.1, alpha=0.025, steps=5, seed=0)(x, y)
        agreement = float((direction == low).float().mean())
        report.check(f"{amp} FGSM direction agrees with float32 (> 0.9)", agreement > 0.9,
                     f"{agreement:.4f} of the signs")  # fmt: skip
        report.check(f"{amp} attacks really ran in low precision", not torch.equal(direction, low))
        in_ball = float((x_low - x).abs().max()) <= 0.1 + 1e-6
        report.check(f"{amp} PGD-5 stays in the ε-ball, float32 output",
                     in_ball and x_low.dtype == torch.float32)  # fmt: skip
        with torch.no_grad():
            loss_low = float(F.cross_entropy(model(x_low), y))
        report.check(f"{amp} PGD-5 loss within 5% of float32's and above clean",
                     rel_close(loss_low, loss, 0.05) and loss_low > clean,
                     f"{loss_low:.4f} vs {loss:.4f} (clean {clean:.4f})")  # fmt: skip
    # Training (tests/test_speed.py::test_mixed_precision_training_stays_close_and_learns)
    config = moons_config(epochs=6)
    started = time.perf_counter()
    full = train(config, None, device=args.device)
    report.row("float32 moons training (6 epochs)", f"{time.perf_counter() - started:.1f} s")
    losses = [m["train_loss"] for m in full.metrics]
    for amp in ("bf16", "fp16"):
        started = time.perf_counter()
        mixed = train(config.model_copy(update={"amp": amp}), None, device=args.device)
        seconds = time.perf_counter() - started
        mixed_losses = [m["train_loss"] for m in mixed.metrics]
        weight = mixed.model.state_dict()["fc1.weight"]
        report.check(f"{amp} training: losses within 5% of float32's every epoch",
                     all(rel_close(b, a, 0.05) for a, b in zip(losses, mixed_losses, strict=True)),
                     " / ".join(f"{b:.4f}:{a:.4f}" for a, b in zip(losses, mixed_losses,
                                                                    strict=True)))  # fmt: skip
        report.check(f"{amp} training learns (last loss < 0.6 × first, test acc ≥ 0.85)",
                     mixed_losses[-1] < 0.6 * mixed_losses[0]
                     and mixed.metrics[-1]["test_accuracy"] >= 0.85,
                     f"test acc {mixed.metrics[-1]['test_accuracy']:.3f}")  # fmt: skip
        report.check(f"{amp} weights stay float32 and differ from float32 training",
                     weight.dtype == torch.float32
                     and not torch.equal(weight, full.model.state_dict()["fc1.weight"]))  # fmt: skip
        report.row(f"{amp} moons training (6 epochs)", f"{seconds:.1f} s")


def _train_steps(
    dev: Any, model_name: str, channels_last: bool, method: str, n_steps: int = 3
) -> tuple[list[float], Any]:
    """tests/test_speed.py::_steps on the GPU: 3 training steps of ``model_name`` (``tiny_cnn``,
    the test's 1×8×8 network, or a registry model) on 16 random images each."""
    import torch

    from lsakit import models, speed
    from lsakit.train.objectives import build_objective
    from lsakit.train.trainer import training_step

    if model_name == "tiny_cnn":
        sys.path.insert(0, str(ROOT / "tests"))
        from helpers import tiny_cnn

        model, shape, classes = tiny_cnn(seed=1), (1, 8, 8), 5
    else:
        torch.manual_seed(1)
        info = models.info(model_name)
        model, shape, classes = models.build(model_name), info.input_shape, info.num_classes
    model = model.to(dev)
    if channels_last:
        model = speed.channels_last_model(model)
    params = {"eps": 0.1, "steps": 3, "alpha": 0.03} if method == "pgd" else {}
    objective = build_objective(method, **params)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(3)
    losses = []
    for step in range(n_steps):
        g = torch.Generator().manual_seed(step)
        x = torch.rand(16, *shape, generator=g).to(dev)
        y = torch.randint(0, classes, (16,), generator=g).to(dev)
        x = speed.to_channels_last(x, channels_last)
        loss, _, _ = training_step(model, objective, None, None, optimizer, x, y)
        losses.append(loss)
    return losses, model


def _compare_layouts(dev: Any, model_name: str, method: str) -> tuple[float, float, bool, bool]:
    """(max loss difference, max weight difference, weights within 1e-5, conv weights really
    channels-last) of the same steps in the two layouts."""
    import torch

    losses, model = _train_steps(dev, model_name, False, method)
    losses_cl, model_cl = _train_steps(dev, model_name, True, method)
    loss_diff = max(abs(a - b) for a, b in zip(losses, losses_cl, strict=True))
    pairs = list(zip(model.state_dict().values(), model_cl.state_dict().values(), strict=True))
    worst = max(float((p.float() - q.float()).abs().max()) for p, q in pairs)
    close = all(bool(torch.allclose(q, p, atol=1e-5, rtol=1e-5)) for p, q in pairs)
    conv = next(p for p in model_cl.parameters() if p.dim() == 4)
    return loss_diff, worst, close, conv.is_contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def part_channels_last(report: Report, args: argparse.Namespace) -> None:
    import torch

    dev = torch.device(args.device)
    report.note(
        "tests/test_speed.py's check (its network, 3 SGD steps, losses abs 1e-5, weights atol = "
        "rtol = 1e-5) with TF32 off: cuDNN's TF32 convolutions differ from float32 by ~1e-3 "
        "whatever the layout. Model B rows: the same steps on 28×28 images; under PGD a gradient "
        "sign that flips between layouts changes the adversarial batch, so those are info."
    )
    for model_name, method, checked in (
        ("tiny_cnn", "standard", True), ("tiny_cnn", "pgd", True),
        ("model_b", "standard", True), ("model_b", "pgd", False),
    ):  # fmt: skip
        with tf32(False):
            loss_diff, worst, close, layout = _compare_layouts(dev, model_name, method)
        label = f"{model_name}, {method}"
        if checked:
            report.check(f"{label}: same losses (abs 1e-5)", loss_diff <= 1e-5,
                         f"max diff {loss_diff:.2e}")  # fmt: skip
            report.check(f"{label}: same weights (atol = rtol = 1e-5)", close,
                         f"max |Δ| {worst:.2e}")  # fmt: skip
            report.check(f"{label}: conv weights are channels-last", layout)
        else:
            report.row(f"{label}: max loss / weight difference", f"{loss_diff:.2e} / {worst:.2e}",
                       "info")  # fmt: skip
    with tf32(True):
        loss_diff, worst, _, _ = _compare_layouts(dev, "model_b", "standard")
    report.row("model_b, standard, TF32 on (PyTorch's cuDNN default): max loss / weight "
               "difference", f"{loss_diff:.2e} / {worst:.2e}", "info")  # fmt: skip


def part_compile(report: Report, args: argparse.Namespace) -> None:
    from lsakit.train import train

    config = moons_config(epochs=1, data_options={"n_samples": 128})
    eager = train(config, None, device=args.device)
    started = time.perf_counter()
    compiled = train(config.model_copy(update={"compile": True}), None, device=args.device)
    seconds = time.perf_counter() - started
    report.row("compiled moons run (1 epoch, compiling included)", f"{seconds:.1f} s")
    import torch

    pairs = [(compiled.model.state_dict()[n], p) for n, p in eager.model.state_dict().items()]
    worst = max(float((q - p).abs().max()) for q, p in pairs)
    close = all(torch.allclose(q, p, atol=1e-4, rtol=1e-4) for q, p in pairs)
    report.check("same weights as eager (atol = rtol = 1e-4)", close, f"max |Δ| {worst:.2e}")
    a, b = eager.metrics[0]["train_loss"], compiled.metrics[0]["train_loss"]
    report.check("same training loss (abs 1e-4)", abs(a - b) <= 1e-4, f"{b:.6f} vs {a:.6f}")
    report.check("returns the plain module", not hasattr(compiled.model, "_orig_mod"))
    report.check("compiles within 120 s", seconds < 120, f"{seconds:.0f} s")


def part_nccl(report: Report, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               "-m", "lsakit", "--threads", "1", "train", "-d", "moons", "--epochs", "1",
               "--limit", "256", "--device", args.device, "--out", str(out)]  # fmt: skip
        env = {**os.environ, "NCCL_DEBUG": "VERSION", "PYTHONUNBUFFERED": "1"}
        started = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=max(args.budget - 10, 10),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        output = proc.stdout + proc.stderr
        report.row("torchrun --nproc_per_node=1 lsakit train (moons, 1 epoch)", f"{seconds:.1f} s",
                   "command: " + " ".join(cmd[1:]).replace(str(out), "RUN"))  # fmt: skip
        report.check("exit 0", proc.returncode == 0,
                     f"exit {proc.returncode}" + ("" if proc.returncode == 0
                                                  else ": " + output[-400:]))  # fmt: skip
        if args.device == "cuda":
            version = re.search(r"NCCL version [^\s]+", output)
            report.check("NCCL initialised (NCCL_DEBUG=VERSION line)", version is not None,
                         version.group(0) if version else "no 'NCCL version' line in the output")  # fmt: skip
        else:
            report.note("On the CPU (--allow-cpu): a gloo process group, no NCCL.")
        metrics = out / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        report.check("rank 0 wrote metrics.jsonl (1 epoch)", len(lines) == 1)
        if lines:
            record = json.loads(lines[0])
            report.row("its epoch", f"test acc {record['test_accuracy']:.4f}",
                       f"train loss {record['train_loss']:.4f}")  # fmt: skip


def _samples_per_second(step: Callable[[], object], batch: int, seconds: float) -> float:
    for _ in range(3):  # warm-up: cuDNN autotuning, allocator
        step()
    cuda_sync()
    started = time.perf_counter()
    count = 0
    while True:
        step()
        count += 1
        if count >= 3:
            cuda_sync()
            elapsed = time.perf_counter() - started
            if elapsed >= seconds or count >= 200:
                return count * batch / elapsed


def attack_settings(names: list[str]) -> list[tuple[str, float, float]]:
    """(model, ε, PGD step) for each model: MNIST's 0.3 / 0.075 for one-channel inputs, CIFAR's
    8/255 / 2/255 otherwise."""
    from lsakit import models

    return [
        (n, 0.3, 0.075) if models.info(n).input_shape[0] == 1 else (n, 8 / 255, 2 / 255)
        for n in names
    ]


def part_throughput(report: Report, args: argparse.Namespace) -> None:
    import torch

    from lsakit import models, speed
    from lsakit.train.objectives import build_objective
    from lsakit.train.trainer import training_step

    dev = torch.device(args.device)
    batch = args.batch
    report.note(f"AT-PGD-10 training steps (lsakit.train.trainer.training_step), batch {batch}, "
                "random data; SGD; time per variant ≥ "
                f"{args.seconds:g} s after 3 warm-up steps.")  # fmt: skip
    for name, eps, alpha in attack_settings(args.models):
        info = models.info(name)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, *info.input_shape, generator=g).to(dev)
        y = torch.randint(0, info.num_classes, (batch,), generator=g).to(dev)
        for amp, channels_last in (("off", False), ("bf16", False), ("bf16", True)):
            model = models.build(name).to(dev)
            if channels_last:
                model = speed.channels_last_model(model)
            xb = speed.to_channels_last(x, channels_last)
            objective = build_objective("pgd", eps=eps, alpha=alpha, steps=10)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            model.train()

            def step(model: Any = model, objective: Any = objective, optimizer: Any = optimizer,
                     xb: Any = xb, y: Any = y, amp: str = amp) -> object:  # fmt: skip
                return training_step(model, objective, None, None, optimizer, xb, y, amp=amp)

            rate = _samples_per_second(step, batch, args.seconds)
            label = {("off", False): "float32", ("bf16", False): "bf16",
                     ("bf16", True): "bf16 + channels-last"}[(amp, channels_last)]  # fmt: skip
            report.row(f"AT-PGD-10 {name}, {label}", f"{rate:,.0f} samples/s")


def part_attacks(report: Report, args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from lsakit import models
    from lsakit.perturb import PGD

    try:
        import torchattacks
    except ImportError as e:
        torchattacks = None
        report.note(f"torchattacks not importable ({e}): its rows are skipped; "
                    "`pip install torchattacks` (or carry its wheel, make gpu-wheels).")  # fmt: skip
    dev = torch.device(args.device)
    batch = args.batch
    for name, eps, alpha in attack_settings(args.models):
        info = models.info(name)
        model = models.build(name).to(dev).eval()
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, *info.input_shape, generator=g).to(dev)
        y = torch.randint(0, info.num_classes, (batch,), generator=g).to(dev)
        ours = PGD(model, eps=eps, alpha=alpha, steps=10, seed=0)
        runs: dict[str, Callable[[], torch.Tensor]] = {
            "lsakit": lambda ours=ours, x=x, y=y: ours(x, y)
        }
        if torchattacks is not None:
            theirs = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=10, random_start=True)
            runs["torchattacks"] = lambda theirs=theirs, x=x, y=y: theirs(x, y)
        for run in runs.values():  # warm-up
            run()
        best = dict.fromkeys(runs, math.inf)
        losses = dict.fromkeys(runs, math.nan)
        for _ in range(5):  # interleaved, best of 5
            for label, run in runs.items():
                cuda_sync()
                started = time.perf_counter()
                x_adv = run()
                cuda_sync()
                best[label] = min(best[label], time.perf_counter() - started)
                with torch.no_grad():
                    losses[label] = float(F.cross_entropy(model(x_adv), y))
                ok = float((x_adv - x).abs().max()) <= eps + 1e-5 and float(x_adv.min()) >= 0
                if not ok:
                    report.check(f"{label} PGD-10 on {name} stays in the ε-ball and [0, 1]", False)
        report.row(f"lsakit PGD-10, {name}, batch {batch}", f"{1000 * best['lsakit']:.1f} ms",
                   f"{batch / best['lsakit']:,.0f} samples/s; adversarial loss {losses['lsakit']:.3f}")  # fmt: skip
        if "torchattacks" in best:
            report.row(f"torchattacks PGD-10, {name}", f"{1000 * best['torchattacks']:.1f} ms",
                       f"torchattacks / lsakit time {best['torchattacks'] / best['lsakit']:.2f} "
                       f"(> 1: lsakit faster); adversarial loss {losses['torchattacks']:.3f}")  # fmt: skip
        else:
            report.row(f"torchattacks PGD-10, {name}", "skipped", "torchattacks not importable")


class _StopAfterEpoch(Exception):
    pass


def part_mnist(report: Report, args: argparse.Namespace) -> None:
    from lsakit.config import load_config
    from lsakit.train import train

    data_dir = args.data_dir
    if data_dir is None or not (Path(data_dir) / "mnist").is_dir():
        report.skip(f"no MNIST under {data_dir or ' / '.join(map(str, DATA_CANDIDATES))}/mnist: "
                    "give --data-dir (make gpu-data copies ../shared/data/mnist to .gpu-data)")  # fmt: skip
        return
    config = load_config(ROOT / "configs" / "mnist-fast-at.yaml")

    records: list[dict[str, Any]] = []

    def stop(epoch: int, record: dict[str, Any]) -> None:  # the run is 10 epochs: keep epoch 1
        records.append(record)
        raise _StopAfterEpoch

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with contextlib.suppress(_StopAfterEpoch):
            train(config, Path(tmp) / "run", device=args.device, data_dir=data_dir,
                  on_epoch_end=stop)  # fmt: skip
        seconds = time.perf_counter() - started
    if not records:
        report.check("epoch 1 completed", False)
        return
    record = records[0]
    n_train = round(60000 * (1 - config.val_fraction))
    report.row("epoch 1 of 10 (fast AT, ε 0.3, model B, batch 100)", f"{record['seconds']:.1f} s",
               f"{n_train / record['seconds']:,.0f} training samples/s incl. validation; "
               f"{seconds:.1f} s with data loading and start-up")  # fmt: skip
    report.row(
        "train loss / train acc", f"{record['train_loss']:.4f} / {record['train_accuracy']:.4f}"
    )
    report.row("val clean / val PGD-10", f"{record['val_clean']:.4f} / {record['val_robust']:.4f}",
               f"{round(60000 * config.val_fraction)} held-out training images")  # fmt: skip
    report.row("test clean accuracy", f"{record['test_accuracy']:.4f}")
    report.check("finite loss, learning (test acc > 0.5 after one epoch)",
                 math.isfinite(record["train_loss"]) and record["test_accuracy"] > 0.5)  # fmt: skip


PARTS: dict[str, Part] = {
    "tests": Part("CUDA-only tests", 60, part_tests),
    "amp": Part("--amp bf16 / fp16 against float32", 60, part_amp),
    "channels_last": Part("--channels-last against the default layout", 40, part_channels_last),
    "nccl": Part("NCCL under torchrun --nproc_per_node=1", 60, part_nccl),
    "throughput": Part("AT-PGD-10 samples/s", 75, part_throughput),
    "attacks": Part("lsakit PGD-10 vs torchattacks PGD-10", 50, part_attacks),
    "mnist": Part("MNIST fast-AT anchor, epoch 1", 90, part_mnist),
    "compile": Part("--compile against eager", 90, part_compile),
}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"gpu-check: error: {message} (see --help)\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(description=__doc__.split("\n\n")[0], prog="gpu_check.py")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown file")
    parser.add_argument("--data-dir", help="directory holding mnist/ (the IDX files)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated parts to run, of: {', '.join(PARTS)}")  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help="time budget of the whole check (each part also has its own)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=256, help="batch of the speed parts")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per speed variant")
    parser.add_argument("--models", default="model_b,preact_resnet18",
                        help="registry models of the throughput and attacks parts")  # fmt: skip
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply every part's budget (a slow machine)")  # fmt: skip
    parser.add_argument("--allow-cpu", action="store_true",
                        help="run on the CPU when there is no CUDA (to test this script)")  # fmt: skip
    parser.add_argument("--worker", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.part_names = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.part_names if p not in PARTS]
    if unknown or not args.part_names:
        parser.error(f"unknown part(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(PARTS)}")  # fmt: skip
    if args.max_seconds <= 0 or args.batch < 1 or args.seconds <= 0 or args.budget_scale <= 0:
        parser.error("--max-seconds, --batch, --seconds and --budget-scale must be positive")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models:
        parser.error("--models names no model")
    if args.data_dir is None:
        args.data_dir = os.environ.get("LSAKIT_DATA") or next(
            (str(d) for d in DATA_CANDIDATES if (d / "mnist").is_dir()), None
        )
    return args


def worker(args: argparse.Namespace) -> int:
    report = Report(args.result)
    try:
        PARTS[args.worker].run(report, args)
    except Exception as e:
        lines = traceback.format_exception(type(e), e, e.__traceback__)
        report.check("ran without an exception", False,
                     f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                     f"(at {lines[-2].strip().splitlines()[0] if len(lines) > 1 else '?'})")  # fmt: skip
        return 1
    return 0


def run_part(name: str, args: argparse.Namespace, timeout: float, tmp: Path) -> dict[str, Any]:
    """Run one part in its own process (own session, killed whole at its time limit)."""
    result = tmp / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--result", str(result),
           "--budget", f"{timeout:.0f}", "--device", args.device, "--batch", str(args.batch),
           "--seconds", str(args.seconds), "--models", ",".join(args.models)]  # fmt: skip
    if args.data_dir is not None:
        cmd += ["--data-dir", str(args.data_dir)]
    started = time.perf_counter()
    log = tmp / f"{name}.log"
    with open(log, "w", encoding="utf-8") as output:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    seconds = time.perf_counter() - started
    data: dict[str, Any] = {"checks": [], "rows": [], "notes": [], "skipped": None}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(result.read_text(encoding="utf-8"))
    failed = [c for c in data["checks"] if not c[1]]
    if data["skipped"]:
        status = "skipped"
    elif code is None:
        status = f"TIME OUT after {timeout:.0f} s"
    elif code != 0 or failed:
        status = "FAILED"
    else:
        status = "ok"
    if code not in (0, 1, None) and not failed:  # crashed (signal, CUDA abort): show its output
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        data["checks"].append(["exited cleanly", False, f"exit {code}: " + " | ".join(tail)])
    return {"name": name, "status": status, "seconds": seconds, "budget": timeout, **data}


def environment(args: argparse.Namespace) -> list[str]:
    import torch

    lines = []
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU: {props.name}, compute capability {props.major}.{props.minor}, "
                     f"{props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} "
                     "device(s) visible")  # fmt: skip
    else:
        lines.append("GPU: none (--allow-cpu: the parts ran on the CPU)")
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    lines.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {cudnn}), "
                 f"Python {platform.python_version()}, {os.cpu_count()} CPU cores, "
                 f"{platform.platform()}")  # fmt: skip
    try:
        import lsakit

        lines.append(f"lsakit {lsakit.__version__} from {Path(lsakit.__file__).parent}")
    except ImportError as e:
        lines.append(f"lsakit not importable: {e}")
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
        if commit:
            lines.append(f"commit {commit}")
    lines.append(f"data: {args.data_dir or 'none found'}")
    return lines


def render(env: list[str], results: list[dict[str, Any]], args: argparse.Namespace,
           elapsed: float, pending: list[str]) -> str:  # fmt: skip
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# lsakit GPU check — {stamp}", "", *[f"- {line}" for line in env],
           f"- `python3 benchmarks/gpu_check.py --parts {','.join(args.part_names)}`; "
           f"{elapsed:.0f} s of a {args.max_seconds:.0f} s budget", "",
           "| part | status | seconds | budget (s) |", "|---|---|---:|---:|"]  # fmt: skip
    for r in results:
        out.append(f"| {r['name']} | {r['status']} | {r['seconds']:.0f} | {r['budget']:.0f} |")
    for name in pending:
        out.append(f"| {name} | not run yet | | {PARTS[name].budget} |")
    for r in results:
        out += ["", f"## {r['name']}: {PARTS[r['name']].title} — {r['status']}", ""]
        if r["skipped"]:
            out.append(f"Skipped: {r['skipped']}")
        out += [f"{n}" for n in r["notes"]]
        if r["notes"]:
            out.append("")
        if r["checks"]:
            out += ["| check | result | detail |", "|---|---|---|"]
            out += [f"| {c[0]} | {'pass' if c[1] else '**FAIL**'} | {_cell(c[2])} |"
                    for c in r["checks"]]  # fmt: skip
            out.append("")
        if r["rows"]:
            out += ["| measurement | value | note |", "|---|---:|---|"]
            out += [f"| {m[0]} | {_cell(m[1])} | {_cell(m[2])} |" for m in r["rows"]]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # lsakit from this checkout, here and in the processes started (parts, pytest, torchrun)
    src = str(ROOT / "src")
    sys.path.insert(0, src)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    from lsakit import models

    unknown = [m for m in args.models if m not in models.names()]
    if unknown:
        print(f"gpu-check: error: unknown model(s) {', '.join(unknown)} in --models; "
              f"see `lsakit models`", file=sys.stderr)  # fmt: skip
        return 2
    if args.worker:
        if args.result is None:
            print("gpu-check: error: --worker needs --result", file=sys.stderr)
            return 2
        return worker(args)
    import torch

    if not torch.cuda.is_available():
        if not args.allow_cpu:
            print(f"gpu-check: no CUDA device (torch {torch.__version__}, "
                  f"{'CUDA ' + torch.version.cuda if torch.version.cuda else 'a CPU-only build'}); "
                  "nothing to check")  # fmt: skip
            return 0
        args.device = "cpu"
    env = environment(args)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for i, name in enumerate(args.part_names):
            left = args.max_seconds - (time.perf_counter() - started)
            if left < 15:
                results.append({"name": name, "status": "not run: the time budget is spent",
                                "seconds": 0.0, "budget": 0.0, "checks": [], "rows": [],
                                "notes": [], "skipped": None})  # fmt: skip
                continue
            print(f"gpu-check: {name} ({PARTS[name].title}) …", flush=True)
            budget = PARTS[name].budget * args.budget_scale
            result = run_part(name, args, min(budget, left), Path(tmp))
            results.append(result)
            print(f"gpu-check: {name}: {result['status']} ({result['seconds']:.0f} s)", flush=True)
            elapsed = time.perf_counter() - started
            args.out.write_text(render(env, results, args, elapsed, args.part_names[i + 1 :]),
                                encoding="utf-8")  # fmt: skip
    elapsed = time.perf_counter() - started
    args.out.write_text(render(env, results, args, elapsed, []), encoding="utf-8")
    bad = [r["name"] for r in results if r["status"] not in ("ok", "skipped")]
    print(f"gpu-check: {len(results) - len(bad)} of {len(results)} parts ok or skipped"
          + (f"; not ok: {', '.join(bad)}" if bad else "") + f" → {args.out}")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
