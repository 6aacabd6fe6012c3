"""The companion methods in the one trainer: LSP, lasso penalties, PNI noise injection, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import tiny_mlp
from lsakit.checkpoint import load_checkpoint
from lsakit.config import TrainConfig, validate_config
from lsakit.defenses.noise import noise_layers
from lsakit.defenses.sparsity import SparsityRegularizer, lasso_penalty, sparsity_report
from lsakit.errors import ConfigError
from lsakit.train import train
from lsakit.train.lsp import LocalStructureRegularizer
from lsakit.train.objectives import build_objective
from lsakit.train.regularizers import Regularizer
from lsakit.train.step import prepare_regularizers, training_step

MOON = {"model": "model_a", "dataset": "moons", "epochs": 1, "batch_size": 64, "limit": 256,
        "test_limit": 128, "val_fraction": 0.25, "lr": 1e-2}  # fmt: skip


def config(**values: object) -> TrainConfig:
    return validate_config({**MOON, **values})


def test_lasso_term_is_added_exactly_once_per_step() -> None:
    model = tiny_mlp()
    x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
    penalty = float(lasso_penalty(model).detach())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    loss, reg, _ = training_step(
        model, build_objective("standard"), SparsityRegularizer(lasso=0.01), None, optimizer, x, y
    )
    ce = float(nn.functional.cross_entropy(model(x), y).detach())
    assert reg == pytest.approx(0.01 * penalty)
    assert loss == pytest.approx(ce + 0.01 * penalty, rel=1e-6)


def test_lsp_alone_with_standard_training_and_with_at_lr(tmp_path: Path) -> None:
    plain = train(config(regularizer=["lsp"], lsp_weight=0.5), tmp_path / "lsp")
    assert plain.metrics[0]["train_reg"] > 0
    combined = train(
        config(method="pgd", eps=0.05, steps=2, regularizer=["lsp"], lsp_on="clean+adv",
               lr_layers=["L0"], gamma=0.1),
        tmp_path / "both",
    )  # fmt: skip
    assert combined.metrics[0]["train_reg"] > 0
    assert combined.regularized_layers == ["L0"]


def test_lsp_and_lr_get_their_own_representations() -> None:
    """With one probe serving both, each regularizer receives its own layer's capture."""
    from lsakit.probe import LayerProbe
    from lsakit.train.regularizers import LayerwiseRegularizer

    model = tiny_mlp()  # Linear, ELU (L0), Linear, ReLU (L1), Linear
    x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
    lr = LayerwiseRegularizer(["L0"], gamma=1.0)
    seen: dict[str, torch.Tensor] = {}

    class Spy(LocalStructureRegularizer):
        def __call__(self, x, z, x_adv=None, z_adv=None):  # type: ignore[no-untyped-def]
            seen["z"] = z
            return super().__call__(x, z, x_adv, z_adv)

    lsp = Spy(weight=1.0)
    regularizers, layers = prepare_regularizers(model, [lr, lsp], x[:2])
    assert layers == ["1", "3"]  # L0 = the ELU, the penultimate = the ReLU
    assert [r.layers for r in regularizers] == [["1"], ["3"]]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with LayerProbe(model, layers, detach=False) as probe:
        training_step(model, build_objective("pgd", eps=0.05, steps=1), regularizers, probe,
                      optimizer, x, y)  # fmt: skip
    relu_out = torch.relu(model[2](torch.nn.functional.elu(model[0](x))))
    assert torch.allclose(seen["z"], relu_out)


def test_the_three_penalties_are_one_list_of_regularizers() -> None:
    """AT-LR, LSP and the sparsity penalty follow one protocol; their terms add in list order."""
    from lsakit.probe import LayerProbe
    from lsakit.train.regularizers import LayerwiseRegularizer

    model = tiny_mlp()
    x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
    terms: list[Regularizer] = [
        LayerwiseRegularizer(["L1"], gamma=1.0),
        LocalStructureRegularizer(weight=1.0),
        SparsityRegularizer(lasso=0.01),
    ]
    assert all(isinstance(r, Regularizer) for r in terms)
    assert [r.name for r in terms] == ["lr", "lsp", "sparsity"]
    prepared, layers = prepare_regularizers(model, terms, x[:2])
    assert [r.layers for r in prepared] == [["3"], ["3"], []] and layers == ["3"]
    assert terms[1].layers == []  # the originals are left as they were (penultimate: unknown)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with LayerProbe(model, layers, detach=False) as probe:
        _, reg, _ = training_step(
            model, build_objective("fgsm", eps=0.05), prepared, probe, optimizer, x, y
        )
    expected = 0.0
    with LayerProbe(model, layers) as probe:
        model(x)
        (clean,) = probe.take()
        x_adv = build_objective("fgsm", eps=0.05)(model, x, y).x_adv
        assert x_adv is not None
        model(x_adv)
        (adv,) = probe.take()
    for term in (prepared[0]([clean], [adv]), prepared[1](x, clean), terms[2](model)):
        expected += float(term.detach())
    assert reg == pytest.approx(expected, rel=1e-5)


def test_a_term_that_reads_representations_needs_a_probe() -> None:
    from lsakit.train.regularizers import LayerwiseRegularizer

    model = tiny_mlp()
    x, y = torch.rand(8, 4), torch.randint(0, 3, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with pytest.raises(ConfigError, match="the lr term reads layer representations"):
        training_step(model, build_objective("fgsm", eps=0.05), LayerwiseRegularizer(["L0"]),
                      None, optimizer, x, y)  # fmt: skip


def test_pni_noise_injection_trains_saves_and_reloads(tmp_path: Path) -> None:
    result = train(
        config(method="pni", eps=0.05, steps=2, noise_injection=True, weight_decay=0.1,
               optimizer="sgd"),
        tmp_path / "pni",
    )  # fmt: skip
    model, meta = load_checkpoint(tmp_path / "pni" / "model.safetensors")
    layers = noise_layers(model)
    assert len(layers) == 4 and meta.extra["config"]["noise_injection"] is True  # fc1..fc4
    alphas = torch.cat([layer.alpha.flatten() for _, layer in layers])
    assert torch.equal(
        alphas, torch.cat([m.alpha.flatten() for _, m in noise_layers(result.model)])
    )
    assert not torch.allclose(alphas, torch.full_like(alphas, 0.25))  # α was trained
    with torch.no_grad():  # the noise stays on at test time: two passes differ
        x = torch.rand(4, 2)
        assert not torch.equal(model(x), model(x))


def test_prune_then_finetune_keeps_exact_sparsity(tmp_path: Path) -> None:
    train(config(epochs=2), tmp_path / "dense")
    dense = tmp_path / "dense" / "model.safetensors"
    result = train(
        config(epochs=1, init_checkpoint=str(dense), prune_sparsity=0.7, optimizer="adam"),
        tmp_path / "pruned",
    )  # fmt: skip
    assert result.metrics[0]["sparsity"] == pytest.approx(0.7, abs=1e-3)
    model, _ = load_checkpoint(tmp_path / "pruned" / "model.safetensors")
    report = sparsity_report(model)
    assert report["sparsity"] == pytest.approx(0.7, abs=1e-3)
    before, _ = load_checkpoint(dense)
    # The surviving weights are those of the largest magnitude and were fine-tuned.
    assert not torch.equal(model.state_dict()["fc1.weight"], before.state_dict()["fc1.weight"])


def test_resume_with_noise_and_masks_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    train(config(epochs=1), tmp_path / "dense")
    values = {"epochs": 2, "init_checkpoint": str(tmp_path / "dense" / "model.safetensors"),
              "prune_sparsity": 0.5, "noise_injection": False, "method": "pni", "eps": 0.05,
              "steps": 1}  # fmt: skip
    whole = train(config(**values), tmp_path / "whole")
    train(config(**{**values, "epochs": 1}), tmp_path / "part")
    # Continue the one-epoch run as the two-epoch one: same config but epochs.
    (tmp_path / "part" / "config.yaml").write_text((tmp_path / "whole" / "config.yaml").read_text())
    resumed = train(config(**values), tmp_path / "part", resume=True)
    for key, value in whole.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[key]), key


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"prune_sparsity": 0.5}, "prune_sparsity needs init_checkpoint"),
        ({"regularizer": ["lsp", "lsp"]}, "regularizer lists a penalty twice"),
        ({"regularizer": ["lsp"], "lsp_variant": "laplacian"}, "needs lsp_k"),
        ({"regularizer": ["lsp"], "lsp_on": "clean+adv"}, "needs an adversarial method"),
        ({"regularizer": ["sparse"]}, r"^invalid regularizer\.0 in options"),  # Python's words
    ],
)
def test_bad_companion_settings(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**values)


def test_an_init_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    train(config(), tmp_path / "a")
    other = config(
        model="model_b", dataset="mnist", init_checkpoint=str(tmp_path / "a" / "model.safetensors")
    )
    with pytest.raises(ConfigError, match="holds a model_a, not a model_b"):
        train(other, tmp_path / "b")


def test_cli_trains_with_lsp_and_lasso_then_prunes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lsakit.cli import main

    run = tmp_path / "run"
    with pytest.raises(SystemExit) as done:
        main(["train", "-d", "moons", "--epochs", "2", "--limit", "256", "--regularizer",
              "lsp,lasso", "--lsp-weight", "0.5", "--lasso-weight", "1e-3", "--out", str(run)])  # fmt: skip
    assert done.value.code in (0, None)
    assert "regularizer:\n- lsp\n- lasso" in (run / "config.yaml").read_text()
    with pytest.raises(SystemExit) as done:
        main(["prune", str(run), "--sparsity", "0.85", "--scope", "per_layer", "--epochs", "1"])
    assert done.value.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "(sparsity 85.00%, counted from the saved weights)" in out
    model, _ = load_checkpoint(run / "pruned-0.85" / "model.safetensors")
    for name, layer in sparsity_report(model)["layers"].items():
        assert layer["sparsity"] == pytest.approx(0.85, abs=0.01), name
    with pytest.raises(SystemExit) as done:
        main(["prune", str(run), "--sparsity", "1.5"])
    assert done.value.code == 2
    assert "--sparsity must lie in [0, 1), got 1.5" in capsys.readouterr().err
