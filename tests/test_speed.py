"""Speed options (lsakit.speed): mixed precision, channels-last, torch.compile — all off by default,
and where they apply on CPU they must not change results beyond float tolerance."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from helpers import run_cli, tiny_cnn, train_one_epoch_then_stop
from lsakit import speed
from lsakit.config import TrainConfig
from lsakit.errors import ConfigError
from lsakit.perturb import FGSM, PGD
from lsakit.train import train
from lsakit.train.objectives import build_objective
from lsakit.train.trainer import training_step

SMALL = TrainConfig(
    model="model_a", dataset="moons", epochs=2, batch_size=64, lr=1e-2,
    data_options={"n_samples": 300},
)  # fmt: skip
AT = SMALL.model_copy(update={"method": "fgsm", "eps": 0.05, "val_steps": 3})


def _images(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def _dtypes_seen(model: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))  # type: ignore[index]
    return seen


# -- options and their defaults --------------------------------------------------------------
def test_everything_is_off_by_default_and_bad_values_are_refused() -> None:
    assert (SMALL.amp, SMALL.channels_last, SMALL.compile) == ("off", False, False)
    with pytest.raises(ValidationError):
        TrainConfig(model="model_a", dataset="moons", amp="fp8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"unknown --amp 'fp32'; use one of off, bf16, fp16"):
        speed.check_amp("fp32")
    assert speed.grad_scaler("off", "cpu") is None and speed.grad_scaler("bf16", "cpu") is None
    assert speed.grad_scaler("fp16", "cpu") is not None
    x = torch.rand(2, 1, 4, 4)
    assert speed.to_channels_last(x, False) is x
    assert speed.to_channels_last(x, True).is_contiguous(memory_format=torch.channels_last)
    flat = torch.rand(2, 4)
    assert speed.to_channels_last(flat, True) is flat  # not an image batch: unchanged


# -- mixed precision in attacks -----------------------------------------------------------------
def test_attack_precision_autocasts_only_the_attack_forwards_and_is_restored() -> None:
    model = tiny_cnn()
    seen = _dtypes_seen(model)
    x, y = _images()
    attack = FGSM(model, eps=0.1)
    attack(x, y)
    assert seen == [torch.float32]
    with speed.attack_precision("bf16"):
        x_adv = attack(x, y)
        with torch.no_grad():
            model(x)  # a forward outside an attack stays in full precision
    assert seen[1:] == [torch.bfloat16, torch.float32]
    assert x_adv.dtype == torch.float32
    with pytest.raises(RuntimeError, match="boom"), speed.attack_precision("bf16"):
        raise RuntimeError("boom")
    seen.clear()
    attack(x, y)
    assert seen == [torch.float32]  # restored after the block, error or not


def test_bf16_attacks_agree_with_full_precision() -> None:
    model = tiny_cnn().eval()
    x, y = _images(64)
    direction = FGSM(model, eps=0.0).direction(x, y)
    with speed.attack_precision("bf16"):
        direction_bf16 = FGSM(model, eps=0.0).direction(x, y)
        x_adv_bf16 = PGD(model, eps=0.1, alpha=0.025, steps=5, seed=0)(x, y)
    x_adv = PGD(model, eps=0.1, alpha=0.025, steps=5, seed=0)(x, y)
    # The sign of the input gradient: bf16 keeps 8 bits of mantissa; tiny components may flip.
    agreement = float((direction == direction_bf16).float().mean())
    assert agreement > 0.9, agreement
    assert not torch.equal(direction, direction_bf16)  # bf16 really ran
    assert float((x_adv_bf16 - x).abs().max()) <= 0.1 + 1e-6  # still in the ε-ball
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x_adv), y)
        loss_bf16 = torch.nn.functional.cross_entropy(model(x_adv_bf16), y)
        clean = torch.nn.functional.cross_entropy(model(x), y)
    assert float(loss_bf16) > float(clean)  # the bf16 attack still ascends the loss
    assert float(loss_bf16) == pytest.approx(float(loss), rel=0.05)


# -- mixed precision in training -----------------------------------------------------------------
def _train_loss(result: object) -> list[float]:
    return [m["train_loss"] for m in result.metrics]  # type: ignore[attr-defined]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training_stays_close_and_learns(amp: str) -> None:
    config = SMALL.model_copy(update={"epochs": 6})
    full = train(config, None)
    mixed = train(config.model_copy(update={"amp": amp}), None)
    w_full = full.model.state_dict()["fc1.weight"]
    w_mixed = mixed.model.state_dict()["fc1.weight"]
    assert not torch.equal(w_full, w_mixed)  # the forwards really ran in low precision
    assert w_mixed.dtype == torch.float32  # the weights stay float32 (autocast, not .half())
    for a, b in zip(_train_loss(full), _train_loss(mixed), strict=True):
        assert b == pytest.approx(a, rel=0.05)
    losses = _train_loss(mixed)
    assert losses[-1] < 0.6 * losses[0]
    assert mixed.metrics[-1]["test_accuracy"] >= 0.85


def test_amp_is_recorded_and_survives_resume(tmp_path: Path) -> None:
    config = AT.model_copy(update={"amp": "fp16", "epochs": 2})
    whole = train(config, tmp_path / "whole")
    train_one_epoch_then_stop(config, tmp_path / "cut")
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0  # the fp16 loss scale is part of the resume point
    saved = yaml.safe_load((tmp_path / "cut" / "config.yaml").read_text())
    assert (saved["amp"], saved["channels_last"], saved["compile"]) == ("fp16", False, False)
    from lsakit.config import load_run_config

    resumed = train(load_run_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    strip = [{k: v for k, v in m.items() if k != "seconds"} for m in whole.metrics]
    assert [{k: v for k, v in m.items() if k != "seconds"} for m in resumed.metrics] == strip
    # ... and differs from the same run in full precision, so the option was in effect.
    plain = train(AT.model_copy(update={"epochs": 2}), None)
    assert not torch.equal(plain.model.state_dict()["fc1.weight"], whole.model.fc1.weight)


# -- channels-last ---------------------------------------------------------------------------------
def _steps(
    channels_last: bool, method: str = "pgd", n_steps: int = 3
) -> tuple[list[float], torch.nn.Module]:
    model = tiny_cnn(seed=1)
    if channels_last:
        model = speed.channels_last_model(model)
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)  # type: ignore[index]
    params = {"eps": 0.1, "steps": 3, "alpha": 0.03} if method == "pgd" else {}
    objective = build_objective(method, **params)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(3)
    losses = []
    for step in range(n_steps):
        x, y = _images(16, seed=step)
        x = speed.to_channels_last(x, channels_last)
        loss, _, _ = training_step(model, objective, None, None, optimizer, x, y)
        losses.append(loss)
    return losses, model


@pytest.mark.parametrize("method", ["standard", "pgd"])
def test_channels_last_gives_the_same_losses_and_weights(method: str) -> None:
    losses, model = _steps(False, method)
    losses_cl, model_cl = _steps(True, method)
    assert losses_cl == pytest.approx(losses, abs=1e-5)
    assert losses[-1] != losses[0]  # the steps did change the model
    for (name, p), q in zip(
        model.state_dict().items(), model_cl.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-5, msg=name)


def test_channels_last_run_on_images_saves_loadable_checkpoints(
    tmp_path: Path, shared_data: Path
) -> None:
    config = TrainConfig(
        model="model_b", dataset="mnist", epochs=1, batch_size=64, limit=256, test_limit=64,
        val_fraction=0.25, optimizer="sgd", lr=0.01,
    )  # fmt: skip
    # SGD: Adam divides by √v, which turns float noise in near-zero gradients into lr-sized steps
    plain = train(config, None, data_dir=shared_data)
    fast = train(config.model_copy(update={"channels_last": True}), tmp_path, data_dir=shared_data)
    for name, p in plain.model.state_dict().items():
        torch.testing.assert_close(fast.model.state_dict()[name], p, atol=1e-5, rtol=1e-5)
    from lsakit.checkpoint import load_checkpoint

    loaded, _ = load_checkpoint(tmp_path / "model.safetensors")
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded.eval()(x), plain.model.eval()(x), atol=1e-5, rtol=1e-5)


# -- torch.compile -------------------------------------------------------------------------------
def test_compile_gives_the_same_weights() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler (cc/gcc), none on PATH")
    config = SMALL.model_copy(update={"epochs": 1, "data_options": {"n_samples": 128}})
    eager = train(config, None)
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # no graph cached by an earlier test in this process
    counters.clear()
    compiled = train(config.model_copy(update={"compile": True}), None)
    for name, p in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[name], p, atol=1e-4, rtol=1e-4)
    assert compiled.metrics[0]["train_loss"] == pytest.approx(
        eager.metrics[0]["train_loss"], abs=1e-4
    )
    # the returned model is the plain module (checkpoints, probes), not the compiled wrapper
    assert not hasattr(compiled.model, "_orig_mod")
    # the training really ran compiled: Dynamo captured the model whole (no graph break) and
    # AOTAutograd compiled its forward and backward (what compile produces, not how fast)
    assert counters["stats"]["unique_graphs"] >= 1 and counters["aot_autograd"]["ok"] >= 1
    assert dict(counters["graph_break"]) == {}


COMPILED_MATCHES_EAGER = """
import torch
from lsakit import models, speed
torch.manual_seed(0)
model = models.build("model_a")
x = torch.rand(32, 2)
print(float((speed.compiled(model)(x) - model(x)).abs().max()))
"""


@pytest.mark.slow
def test_compiled_kernels_are_not_shared_across_cpu_capabilities(tmp_path: Path) -> None:
    # Inductor's caches are not keyed on ATEN_CPU_CAPABILITY (torch 2.14): without lsakit's
    # subfolder per capability, the second run loads the first one's AVX-512 kernel under AVX2 and
    # its logits are off by ~1e31 (measured). The portable numerics mode sets that variable.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C compiler (cc/gcc), none on PATH")
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    for capability in ({}, {"ATEN_CPU_CAPABILITY": "avx2"}, {}):
        done = subprocess.run(
            [sys.executable, "-c", COMPILED_MATCHES_EAGER], env={**env, **capability},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert float(done.stdout.split()[-1]) < 1e-5, (capability, done.stdout)
    assert {p.name for p in (tmp_path / "inductor").iterdir()} <= {"aten-avx2", "aten-avx512"}


# -- command line ----------------------------------------------------------------------------------
def test_cli_flags_are_recorded_and_resume_refuses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["--threads", "1", "train", "-d", "moons", "--epochs", "1", "--limit", "200",
         "--amp", "bf16", "--channels-last", "--out", str(run)],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["amp"], saved["channels_last"], saved["compile"]) == ("bf16", True, False)
    code, _, err = run_cli(["train", "--resume", str(run), "--amp", "off"], capsys)
    assert code == 2 and "drop --amp" in err
    code, _, err = run_cli(
        ["train", "-d", "moons", "--amp", "fp32", "--out", str(tmp_path)], capsys
    )
    assert code == 2 and err.startswith("error: ") and "amp" in err and len(err.splitlines()) == 1


def test_cli_evaluate_amp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train(SMALL.model_copy(update={"epochs": 1}), run)
    checkpoint = str(run / "model.safetensors")
    code, _, err = run_cli(["evaluate", "--checkpoint", checkpoint, "--amp", "fp32"], capsys)
    assert code == 2 and "unknown --amp 'fp32'" in err
    code, _, err = run_cli(
        ["evaluate", "--checkpoint", checkpoint, "--suite", "standard", "--amp", "bf16"], capsys
    )
    assert code == 2 and "drop --amp" in err
    outputs = {}
    for amp in ("off", "bf16"):
        out_dir = tmp_path / amp
        code, _, err = run_cli(
            ["evaluate", "--checkpoint", checkpoint, "--amp", amp, "-a", "pgd=0.1,steps=5",
             "--out", str(out_dir)],
            capsys,
        )  # fmt: skip
        assert code == 0, err
        import json

        outputs[amp] = json.loads((out_dir / "evaluation.json").read_text())
    assert outputs["bf16"]["meta"]["amp"] == "bf16" and "amp" not in outputs["off"]["meta"]
    assert outputs["bf16"]["rg_score"] == pytest.approx(outputs["off"]["rg_score"], abs=5.0)
