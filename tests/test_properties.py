"""Property-based tests: every attack, every config and every CLI call either fails cleanly or
gives a valid result.

* attacks over ε, α, steps, restarts, norm, seed, batch shape (N = 1 included; images and flat
  inputs) and dtype: an :class:`~lsakit.errors.LsakitError`, or an output of the input's shape
  and dtype inside the ε-ball ∩ [0, 1], the input untouched and the model's modes restored;
* TrainConfig values and YAML configs: a valid config or a ConfigError / ValidationError;
* ``lsakit train`` / ``evaluate`` / ``analyze`` with random bad values, in-process through
  :func:`lsakit.cli.main`: exit code 2 with one ``error:`` line, and nothing half-written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

from helpers import attack_net, cli_output, modes, tiny_mlp
from lsakit import perturb
from lsakit.errors import ConfigError, LsakitError

FEW = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Sensible values; one of them is replaced by a bad one (negative, zero, NaN, inf) in 4 of 9 cases.
EPS = st.floats(0.0, 0.5)
ALPHA = st.one_of(st.none(), st.floats(0.0, 0.3))
STEPS = st.integers(1, 4)
RESTARTS = st.integers(1, 2)
SEED = st.one_of(st.none(), st.integers(0, 2**31 - 1))
BAD_VALUES: dict[str, list[Any]] = {
    "eps": [-0.1, math.nan, math.inf, -math.inf],
    "alpha": [-0.01, math.nan, math.inf],
    "steps": [0, -1],
    "restarts": [0, -3],
}


def _build(name: str, model: nn.Module, p: dict[str, Any]) -> perturb.Attack:
    """The attack ``name`` with the drawn parameters, in its own keyword vocabulary."""
    eps, seed = p["eps"], p["seed"]
    if name == "fgsm":
        return perturb.FGSM(model, eps=eps)
    if name == "pgd":
        return perturb.PGD(model, eps=eps, alpha=p["alpha"], steps=p["steps"],
                           restarts=p["restarts"], norm=p["norm"], seed=seed,
                           random_start=p["random_start"])  # fmt: skip
    if name == "apgd":
        return perturb.APGD(model, eps=eps, steps=p["steps"], restarts=p["restarts"], seed=seed,
                            loss=p["loss"])  # fmt: skip
    if name == "apgd_t":
        return perturb.APGDT(model, eps=eps, steps=p["steps"], restarts=p["restarts"], seed=seed,
                             n_target_classes=p["targets"])  # fmt: skip
    if name == "fab_t":
        return perturb.FABT(model, eps=eps, steps=p["steps"], restarts=p["restarts"], seed=seed,
                            n_target_classes=p["targets"])  # fmt: skip
    if name == "square":
        return perturb.Square(model, eps=eps, queries=p["steps"] * 5, seed=seed)
    if name == "mifgsm":
        return perturb.MIFGSM(model, eps=eps, alpha=p["alpha"], steps=p["steps"])
    assert name == "cw"
    return perturb.CWLinf(model, eps=eps, alpha=p["alpha"], steps=p["steps"],
                          restarts=p["restarts"], seed=seed)  # fmt: skip


#: The drawn parameters each attack does not take (a bad value there is not an error).
IGNORED: dict[str, tuple[str, ...]] = {
    "fgsm": ("alpha", "steps", "restarts"), "apgd": ("alpha",), "apgd_t": ("alpha",),
    "fab_t": ("alpha",), "square": ("alpha", "restarts"), "mifgsm": ("restarts",),
}  # fmt: skip
ATTACKS = ["fgsm", "pgd", "apgd", "apgd_t", "fab_t", "square", "mifgsm", "cw"]


@st.composite
def attack_cases(draw: st.DrawFn) -> dict[str, Any]:
    corrupt = draw(st.sampled_from([None] * 5 + sorted(BAD_VALUES)))
    case = {
        "name": draw(st.sampled_from(ATTACKS)),
        "eps": draw(EPS),
        "alpha": draw(ALPHA),
        "steps": draw(STEPS),
        "restarts": draw(RESTARTS),
        "norm": draw(st.sampled_from(["linf", "l2"])),
        "random_start": draw(st.booleans()),
        "loss": draw(st.sampled_from(["ce", "dlr"])),
        "targets": draw(st.integers(1, 9)),
        "seed": draw(SEED),
        "n": draw(st.sampled_from([1, 2, 5])),
        "image": draw(st.booleans()),
        "classes": draw(st.sampled_from([2, 3, 5])),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "data_seed": draw(st.integers(0, 1000)),
        "corrupt": corrupt,
    }
    if corrupt is not None:
        case[corrupt] = draw(st.sampled_from(BAD_VALUES[corrupt]))
    return case


def _model_and_batch(case: dict[str, Any]) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(case["data_seed"])
    n, classes = case["n"], case["classes"]
    if case["image"]:  # (N, 2, 3, 3) with BatchNorm and Dropout: eval mode matters
        model: nn.Module = attack_net(case["data_seed"], classes=classes)
        x = torch.rand(n, 2, 3, 3, generator=g)
    else:  # flat (N, 4)
        torch.manual_seed(case["data_seed"])
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, classes))
        x = torch.rand(n, 4, generator=g)
    x.view(n, -1)[:, 0] = 0.0  # exact bounds, so the [0, 1] clamp is exercised
    x.view(n, -1)[:, -1] = 1.0
    model = model.to(case["dtype"]).train()  # a training-mode model: the attack must restore it
    return model, x.to(case["dtype"]), torch.randint(0, classes, (n,), generator=g)


@FEW
@given(case=attack_cases())
def test_attacks_fail_cleanly_or_stay_in_the_threat_model(case: dict[str, Any]) -> None:
    model, x, y = _model_and_batch(case)
    x_before, y_before, modes_before = x.clone(), y.clone(), modes(model)
    params_before = [p.detach().clone() for p in model.parameters()]
    try:
        attack = _build(case["name"], model, case)
        x_adv = attack(x, y)
    except LsakitError as error:
        message = str(error)
        assert message and "\n" not in message, message
        bad = (
            case["corrupt"] is not None
            or (case["classes"] < 4 and case["name"] == "apgd_t")  # needs 4 classes (documented)
            or (case["loss"] == "dlr" and case["name"] == "apgd" and case["classes"] < 3)
        )  # fmt: skip
        assert bad, f"valid parameters refused: {message}"
        return
    ignores = IGNORED.get(case["name"], ())
    corrupt = case["corrupt"]
    assert corrupt is None or corrupt in ignores, (
        f"{case['name']} accepted {corrupt}={case[corrupt]!r}"
    )
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.equal(x, x_before) and torch.equal(y, y_before), "input mutated"
    assert modes(model) == modes_before, "model mode not restored"
    for p, q in zip(model.parameters(), params_before, strict=True):
        assert torch.equal(p, q) and p.grad is None
    assert bool(torch.isfinite(x_adv).all())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    delta = (x_adv - x).flatten(1)
    tol = 1e-6 if x.dtype == torch.float32 else 1e-12
    if case["name"] == "pgd" and case["norm"] == "l2":
        assert float(delta.norm(dim=1).max()) <= case["eps"] * (1 + tol) + tol
    else:
        assert float(delta.abs().max()) <= case["eps"] + tol


@FEW
@given(
    x_kind=st.sampled_from(["above_one", "negative", "nan", "inf", "int", "empty", "1d"]),
    y_kind=st.sampled_from(["ok", "out_of_range", "negative", "float", "wrong_length", "2d"]),
    name=st.sampled_from(ATTACKS),
)
def test_bad_inputs_to_attacks_raise_input_errors(x_kind: str, y_kind: str, name: str) -> None:
    model = tiny_mlp()
    x, y = torch.rand(3, 4), torch.tensor([0, 1, 2])
    x_bad = {
        "above_one": x + 1.0, "negative": x - 1.0, "nan": x.masked_fill(x > 0.5, math.nan),
        "inf": x.masked_fill(x > 0.5, math.inf), "int": (x * 255).to(torch.uint8),
        "empty": x[:0], "1d": x[0],
    }[x_kind]  # fmt: skip
    if x_kind in ("nan", "inf"):
        x_bad[0, 0] = math.nan if x_kind == "nan" else math.inf
    y_bad = {
        "ok": y, "out_of_range": torch.tensor([0, 1, 3]), "negative": torch.tensor([0, -1, 2]),
        "float": y.float(), "wrong_length": y[:2], "2d": y[:, None],
    }[y_kind]  # fmt: skip
    attack = _build(name, model, {"eps": 0.1, "alpha": None, "steps": 1, "restarts": 1,
                                  "norm": "linf", "seed": 0, "random_start": True, "loss": "ce",
                                  "targets": 2})  # fmt: skip
    with pytest.raises(LsakitError) as info:
        attack(x_bad, y_bad)
    assert "\n" not in str(info.value)
    if y_kind == "ok" or x_kind != "empty":  # the x check runs first
        assert str(info.value).startswith("x "), str(info.value)


# ---------------------------------------------------------------------------------------------
# TrainConfig and YAML configs
# ---------------------------------------------------------------------------------------------
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "epochs": st.sampled_from([0, -1, 1, 2.5, "three", None]),
    "batch_size": st.sampled_from([0, -8, 16, "x", 1e9]),
    "lr": st.sampled_from([0.0, -1.0, 1e-3, math.nan, math.inf, "fast"]),
    "eps": st.sampled_from([-0.1, 0.0, 0.1, math.nan, 2.0]),
    "method": st.sampled_from(["pgd", "fgsm", "nope", 3, ""]),
    "steps": st.sampled_from([0, -2, 3, 1.5]),
    "val_fraction": st.sampled_from([-0.1, 0.0, 0.1, 1.0, 1.5]),
    "gamma": st.sampled_from([-1.0, 0.1, [0.1, 0.2], "g", math.nan]),
    "lr_layers": st.sampled_from([None, [], ["L2"], ["mvl"], "L2", [3]]),
    "optimizer": st.sampled_from(["sgd", "adam", "rmsprop"]),
    "schedule": st.sampled_from(["constant", "cyclic", "weekly"]),
    "seed": st.sampled_from([0, -5, 2**70, "s"]),
    "limit": st.sampled_from([None, 0, -1, 10]),
    "beta": st.sampled_from([-1.0, 6.0, math.inf]),
    "momentum": st.sampled_from([-0.5, 0.9, 1.5]),
    "early_stopping": st.sampled_from([None, 0, 2]),
}


@FEW
@given(updates=st.dictionaries(st.sampled_from(sorted(FIELD_VALUES)), st.just(None), max_size=4)
       .flatmap(lambda keys: st.fixed_dictionaries({k: FIELD_VALUES[k] for k in keys})))  # fmt: skip
def test_train_config_is_valid_or_refused_cleanly(tmp_path: Path, updates: dict[str, Any]) -> None:
    from lsakit.config import load_config, train_config

    base = {"model": "model_a", "dataset": "moons"}
    try:  # the flags' route: the data set's preset, then the values (a YAML file's route too)
        config = train_config({**base, **updates})
    except (ValidationError, ConfigError):
        config = None
    else:  # an accepted config is sane
        assert config.epochs >= 1 and config.batch_size >= 1 and math.isfinite(config.lr)
        assert config.lr > 0 and config.eps >= 0 and 0 <= config.val_fraction < 1
        if config.method != "standard":
            assert config.eps > 0
    # The same values from a YAML file: a clean ConfigError naming the file, or the same config.
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**base, **updates}))
    try:
        loaded = load_config(path)
    except ConfigError as error:
        assert str(path) in str(error) or "config" in str(error), str(error)
        assert "\n" not in str(error)
        assert config is None, f"TrainConfig accepted what the YAML loader refused: {error}"
    else:
        assert config is not None and loaded == config


# ---------------------------------------------------------------------------------------------
# The CLI with bad values, in process
# ---------------------------------------------------------------------------------------------
BAD_TRAIN = st.sampled_from([
    ["--epochs", "0"], ["--epochs", "-3"], ["--batch-size", "0"], ["--lr", "-1"],
    ["--lr", "nan"], ["--eps", "-0.1"], ["--eps", "inf"], ["--method", "nope"],
    ["--method", "pgd", "--steps", "0"], ["--optimizer", "rmsprop"], ["--schedule", "weekly"],
    ["--lr-layers", "L99", "--method", "fgsm"], ["--gamma", "a,b"], ["--gamma", "-1"],
    ["--grad-through", "sideways"], ["--model", "model_z"], ["-d", "svhn"],
    ["--regularizer", "ridge"], ["--limit", "0"], ["--device", "tpu"],
    ["--resume", "/nonexistent/run"], ["--config", "/nonexistent.yaml"],
    ["--lsp-variant", "cubic", "--regularizer", "lsp"], ["--early-stopping", "0"],
])  # fmt: skip
BAD_EVALUATE = st.sampled_from([
    ["-a", "pgd=-0.1"], ["-a", "nope=0.1"], ["-a", "pgd=0.1,steps=0"], ["-a", "fgsm=abc"],
    ["-a", "pgd=0.1,bogus=3"], ["--suite", "weird"], ["--suite", "standard", "--eps", "-1"],
    ["--suite", "standard", "--n-examples", "0"], ["--batch-size", "0", "-a", "fgsm=0.1"],
    ["--checkpoint", "/nonexistent.safetensors"], ["-d", "mnist", "-a", "fgsm=0.1"],
])  # fmt: skip
BAD_ANALYZE = st.sampled_from([
    ["-p", "gaussian=-1"], ["-p", "salt=1.5"], ["-p", "pgd=0.1,alpha=-2"], ["-p", "nope"],
    ["--measure", "euclid"], ["--reduction", "mean"], ["--layers", "nolayer"],
    ["--eta", "inf"], ["--eta", "nan"], ["--limit", "0"], ["--split", "validation"],
    ["--mvl-from", "square"], ["-p", "fgsm=0.1", "-p", "fgsm=0.2"], ["--batch-size", "0"],
    ["--checkpoint", "/nonexistent.safetensors"], ["--model", "model_b"],
])  # fmt: skip


@pytest.fixture(scope="module")
def moons_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lsakit.config import TrainConfig
    from lsakit.train import train

    root = tmp_path_factory.mktemp("ck")
    config = TrainConfig(model="model_a", dataset="moons", epochs=1, limit=256,
                         data_options={"n_samples": 300})  # fmt: skip
    train(config, root)
    return root / "model.safetensors"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _check_clean_failure(code: int, stdout: str, stderr: str, args: list[str]) -> None:
    assert code == 2, f"{args}: exit {code}\n{stdout}\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{args}: {stderr!r}"
    assert lines[0].startswith("error:") or lines[0].startswith("Usage:") or "Error" in lines[0]


def _check_out_dir(out: Path, args: list[str]) -> None:
    """Nothing in --out, or only complete files (no temporaries, every JSON parses)."""
    if not out.exists():
        return
    for path in out.rglob("*"):
        assert ".tmp-" not in path.name, f"{args}: temporary {path} left behind"
        if path.suffix == ".json":
            json.loads(path.read_text())
        if path.suffix == ".safetensors":
            from lsakit.checkpoint import read_meta

            read_meta(path)


@settings(max_examples=24, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(command=st.sampled_from(["train", "evaluate", "analyze"]), data=st.data())
def test_cli_bad_values_exit_2_with_one_error_line(
    tmp_path: Path, moons_checkpoint: Path, command: str, data: st.DataObject
) -> None:
    out = tmp_path / f"out-{data.draw(st.integers(0, 10**9))}"
    if command == "train":
        bad = data.draw(BAD_TRAIN)
        args = ["--threads", "1", "train", "-d", "moons", "--epochs", "1", "--limit", "64",
                *bad, "--out", str(out)]  # fmt: skip
        if "--resume" in bad:
            args = ["--threads", "1", "train", *bad]
    elif command == "evaluate":
        bad = data.draw(BAD_EVALUATE)
        checkpoint = [] if "--checkpoint" in bad else ["--checkpoint", str(moons_checkpoint)]
        args = ["--threads", "1", "evaluate", *checkpoint, *bad, "--out", str(out)]
    else:
        bad = data.draw(BAD_ANALYZE)
        checkpoint = [] if "--checkpoint" in bad else ["--checkpoint", str(moons_checkpoint)]
        args = ["--threads", "1", "analyze", "-d", "moons", *checkpoint, "--limit", "32",
                "-p", "gaussian=0.1", *bad, "--out", str(out)]  # fmt: skip
        if bad[0] == "-p":  # the bad spec alone (a duplicate gaussian would be a second problem)
            args.remove("gaussian=0.1")
            args.remove("-p")
    assume(True)
    code, stdout, stderr = cli_output(args)
    _check_clean_failure(code, stdout, stderr, args)
    _check_out_dir(out, args)


# ---------------------------------------------------------------------------------------------
# Bad input at the other API boundaries: probe, measures, analysis, regularizers
# ---------------------------------------------------------------------------------------------
def _nan_rows() -> torch.Tensor:
    reps = torch.rand(4, 8)
    reps[0, 0] = math.nan
    return reps


def _boundary_cases() -> dict[str, tuple[Any, str]]:
    from lsakit import measures
    from lsakit.analysis import analyze, relative_errors
    from lsakit.defenses.sparsity import SparsityRegularizer
    from lsakit.probe import LayerProbe
    from lsakit.train.lsp import LocalStructureRegularizer
    from lsakit.train.regularizers import LayerwiseRegularizer

    model, x, y = tiny_mlp(), torch.rand(4, 4), torch.tensor([0, 1, 2, 0])
    noise = perturb.GaussianNoise(std=0.1)
    ints = torch.ones(2, 8, dtype=torch.long)
    return {  # name: (call, a fragment the one-line message must contain)
        "measure of NaN reps": (lambda: measures.relative_error(_nan_rows(), torch.rand(4, 8)),
                                "NaN"),
        "measure of int reps": (lambda: measures.mse(ints, ints), "dtype torch.int64"),
        "measure of lists": (lambda: measures.linf_distance([1.0], [2.0]), "torch.Tensor"),
        "measure of empty": (lambda: measures.mse(torch.rand(0, 3), torch.rand(0, 3)), "empty"),
        "probe of a non-module": (lambda: LayerProbe("model").__enter__(), "nn.Module"),
        "probe with layers=3": (lambda: LayerProbe(model, 3).__enter__(), "layers="),  # type: ignore[arg-type]
        "probe of an unknown layer": (lambda: LayerProbe(model, ["fc9"]).__enter__(), "fc9"),
        "relative errors above 1": (lambda: relative_errors(model, x + 1, x), "outside [0, 1]"),
        "relative errors of empty": (lambda: relative_errors(model, x[:0], x[:0]), "empty"),
        "relative errors shapes": (lambda: relative_errors(model, x, x[:2]), "shape"),
        "analysis labels out of range": (
            lambda: analyze(model, [(x, y + 5)], {"f": perturb.FGSM(model, eps=0.1)}), "labels"),
        "analysis pixels above 1": (lambda: analyze(model, [(x + 1, y)], {"g": noise}),
                                    "outside [0, 1]"),
        "analysis without perturbations": (lambda: analyze(model, [(x, y)], {}), "perturbation"),
        "noise of negative std": (lambda: perturb.GaussianNoise(std=-0.1), "std"),
        "salt amount above 1": (lambda: perturb.SaltNoise(amount=1.5), "amount"),
        "attack of negative eps": (lambda: perturb.PGD(model, eps=-0.1), "eps"),
        "regularizer gamma < 0": (lambda: LayerwiseRegularizer(["L0"], gamma=-1.0), "gamma must"),
        "regularizer gamma NaN": (lambda: LayerwiseRegularizer(["L0"], gamma=math.nan), "gamma"),
        "regularizer without layers": (lambda: LayerwiseRegularizer([]), "layer"),
        "regularizer of lists": (
            lambda: LayerwiseRegularizer(["L0"])([[1.0]], [[2.0]]), "torch.Tensor"),  # type: ignore[list-item]
        "regularizer of int reps": (lambda: LayerwiseRegularizer(["L0"])([ints], [ints]),
                                    "dtype"),
        "regularizer of empty reps": (
            lambda: LayerwiseRegularizer(["L0"])([torch.rand(0, 8)], [torch.rand(0, 8)]), "empty"),
        "regularizer shape mismatch": (
            lambda: LayerwiseRegularizer(["L0"])([torch.rand(4, 8)], [torch.rand(3, 8)]), "shape"),
        "LSP weight < 0": (lambda: LocalStructureRegularizer(weight=-1.0), "weight"),
        "LSP k = 0": (lambda: LocalStructureRegularizer(k=0), "k must"),
        "LSP rows mismatch": (
            lambda: LocalStructureRegularizer()(x, torch.rand(3, 8), None, None), "row for row"),
        "lasso < 0": (lambda: SparsityRegularizer(lasso=-1.0), "lasso"),
        "group lasso NaN": (lambda: SparsityRegularizer(group_lasso=math.nan), "group_lasso"),
        "sparsity of a non-module": (lambda: SparsityRegularizer()("m"), "nn.Module"),  # type: ignore[arg-type]
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(_boundary_cases()))
def test_bad_input_at_the_api_boundary_gives_a_one_line_lsakit_error(case: str) -> None:
    call, fragment = _boundary_cases()[case]
    with pytest.raises(LsakitError) as info:
        call()
    message = str(info.value)
    assert fragment in message and "\n" not in message, message
