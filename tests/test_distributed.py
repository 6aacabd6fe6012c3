"""Runs under torchrun: two gloo ranks on 127.0.0.1 give one process's weights and numbers.

The two-rank test spawns its processes with ``torch.multiprocessing.spawn`` and the torchrun
environment variables (what torchrun sets), so the code under test detects the launch itself.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from lsakit import data, distributed
from lsakit.analysis import RunningStats, analyze
from lsakit.checkpoint import load_checkpoint
from lsakit.config import TrainConfig
from lsakit.errors import ConfigError
from lsakit.evaluate import evaluate
from lsakit.perturb import FGSM, PGD
from lsakit.train import train

#: 450 moons → 300 train (270 after the 10% validation tail: 8 batches of 32 and one of 14) / 150 test.
DATA = {"n_samples": 450}
CONFIG = TrainConfig(
    model="model_a", dataset="moons", method="fgsm", eps=0.1, epochs=2, batch_size=32, lr=1e-2,
    val_steps=3, data_options=DATA,
)  # fmt: skip
#: AT-PGD + the layer-wise regularizer on L1: random starts and a probe under DDP.
CONFIG_LR = CONFIG.model_copy(
    update={"method": "pgd", "steps": 3, "alpha": 0.03, "lr_layers": ["L1"], "epochs": 1}
)
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _analysis_and_evaluation(checkpoint: Path) -> dict[str, Any]:
    """LSA (sample and batch reduction) and evaluation of ``checkpoint`` on the moons test split."""
    model, _ = load_checkpoint(checkpoint)
    loader = data.load("moons", "test", batch_size=32, shuffle=False, **DATA)
    attacks = {
        "fgsm": FGSM(model, eps=0.1),
        "pgd": PGD(model, eps=0.1, alpha=0.03, steps=5, random_start=False),
    }
    lsa = {
        reduction: analyze(model, loader, attacks, reduction=reduction).model_dump()
        for reduction in ("sample", "batch")
    }
    pgd = PGD(model, eps=0.1, alpha=0.03, steps=5, random_start=False)
    result = evaluate(model, loader, fgsm_eps=(0.0, 0.05, 0.1, 0.2), attacks={"pgd": pgd})
    return {"lsa": lsa, "evaluation": result.model_dump()}


def _worker(rank: int, world: int, port: int, work: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    root = Path(work)
    try:
        trained = train(CONFIG, root / "ddp", device="auto")
        with_lr = train(CONFIG_LR, None, device="cpu")
        outcome = {
            "rank": rank,
            "world": distributed.world_size(),
            "state": trained.model.state_dict(),
            "metrics": trained.metrics,
            "lr_state": with_lr.model.state_dict(),
            "lr_metrics": with_lr.metrics,
            **_analysis_and_evaluation(root / "single" / "model.safetensors"),
        }
        torch.save(outcome, root / f"rank{rank}.pt")
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process's results, and both ranks' of the same work on two gloo ranks."""
    for name in TORCHRUN_ENV:
        assert name not in os.environ, f"run the tests outside torchrun ({name} is set)"
    root = tmp_path_factory.mktemp("ddp")
    single = train(CONFIG, root / "single", device="cpu")
    single_lr = train(CONFIG_LR, None, device="cpu")
    reference = _analysis_and_evaluation(root / "single" / "model.safetensors")
    mp.spawn(_worker, args=(2, _free_port(), str(root)), nprocs=2, join=True)
    ranks = [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return {"root": root, "single": single, "single_lr": single_lr, "reference": reference,
            "ranks": ranks}  # fmt: skip


def test_sizes_split_evenly_between_two_ranks() -> None:
    # The exact equivalence needs a training set of an even size (no padded samples).
    x, _ = data.load_tensors("moons", "train", **DATA)
    n_train = len(x) - round(len(x) * CONFIG.val_fraction)
    assert n_train % 2 == 0 and n_train % CONFIG.batch_size != 0  # a short last batch too


@pytest.mark.slow  # torchrun: 2 ranks against one process (the module's `runs`)
def test_two_ranks_train_to_the_weights_of_one_process(runs: dict[str, Any]) -> None:
    single = runs["single"].model.state_dict()
    for outcome in runs["ranks"]:
        assert outcome["world"] == 2
        for name, value in single.items():
            torch.testing.assert_close(outcome["state"][name], value, rtol=0, atol=1e-5)
    # The ranks themselves agree exactly (DDP keeps them in step).
    for name, value in runs["ranks"][0]["state"].items():
        assert torch.equal(value, runs["ranks"][1]["state"][name]), name
    # The weights moved: a test that cannot fail by comparing two untrained models.
    from lsakit import models

    torch.manual_seed(CONFIG.seed)
    untrained = models.build("model_a").state_dict()
    assert (single["fc1.weight"] - untrained["fc1.weight"]).abs().max() > 1e-2


@pytest.mark.slow  # torchrun: 2 ranks against one process (the module's `runs`)
def test_metrics_are_global_sums_not_rank_averages(runs: dict[str, Any]) -> None:
    single = runs["single"].metrics
    for outcome in runs["ranks"]:
        assert len(outcome["metrics"]) == len(single) == 2
        for mine, ref in zip(outcome["metrics"], single, strict=True):
            assert mine["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)
            assert mine["train_accuracy"] == ref["train_accuracy"]
            assert mine["val_clean"] == ref["val_clean"]
            assert mine["test_accuracy"] == ref["test_accuracy"]


@pytest.mark.slow  # torchrun: 2 ranks against one process (the module's `runs`)
def test_rank_zero_alone_wrote_the_run_directory(runs: dict[str, Any]) -> None:
    ddp = runs["root"] / "ddp"
    assert sorted(p.name for p in ddp.iterdir()) == sorted(
        p.name for p in (runs["root"] / "single").iterdir()
    )
    assert [json.loads(line)["epoch"] for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert not list(ddp.glob(".*tmp*"))  # no half-written file left by a second writer
    loaded, meta = load_checkpoint(ddp / "model.safetensors")
    assert meta.extra["epoch"] == 2
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, runs["ranks"][0]["state"][name]), name


@pytest.mark.slow  # torchrun: 2 ranks against one process (the module's `runs`)
def test_layerwise_regularizer_and_random_starts_run_under_ddp(runs: dict[str, Any]) -> None:
    first, second = runs["ranks"]
    for name, value in first["lr_state"].items():
        assert torch.equal(value, second["lr_state"][name]), name  # gradients were synchronized
    assert first["lr_metrics"][0]["train_reg"] > 0  # the probe on ddp.module captured layers
    # Random starts differ per rank, so close to one process but not bit-identical.
    single = runs["single_lr"].model.state_dict()
    assert (first["lr_state"]["fc1.weight"] - single["fc1.weight"]).abs().max() < 0.05


@pytest.mark.slow  # torchrun: 2 ranks against one process (the module's `runs`)
def test_analysis_matches_one_process(runs: dict[str, Any]) -> None:
    reference = runs["reference"]["lsa"]
    for outcome in runs["ranks"]:
        for reduction in ("sample", "batch"):
            mine, ref = outcome["lsa"][reduction], reference[reduction]
            assert mine["n_samples"] == ref["n_samples"] == 150
            assert mine["clean_accuracy"] == ref["clean_accuracy"]
            assert mine["layers"] == ref["layers"]
            for p, q in zip(mine["perturbations"], ref["perturbations"], strict=True):
                assert p["accuracy"] == q["accuracy"]
                assert p["mu"] == pytest.approx(q["mu"], rel=1e-12)
                assert p["sigma"] == pytest.approx(q["sigma"], rel=1e-12)
                for a, b in zip(p["layers"], q["layers"], strict=True):
                    assert (a["count"], a["undefined"]) == (b["count"], b["undefined"])
                    assert a["mean"] == pytest.approx(b["mean"], rel=1e-12)
                    assert a["std"] == pytest.approx(b["std"], rel=1e-12)
    # 150 samples in batches of 32: 5 batches, units = samples or batches.
    assert reference["sample"]["perturbations"][0]["layers"][0]["count"] == 150
    assert reference["batch"]["perturbations"][0]["layers"][0]["count"] == 5


@pytest.mark.slow  # torchrun: 2 ranks against one process (the module's `runs`)
def test_evaluation_matches_one_process(runs: dict[str, Any]) -> None:
    reference = runs["reference"]["evaluation"]
    assert reference["fgsm"][-1]["accuracy"] < reference["clean_accuracy"]  # the attack bites
    for outcome in runs["ranks"]:
        assert outcome["evaluation"] == reference


# -- no process group: the pieces, exactly ------------------------------------------------------
def test_shard_sampler_deals_out_the_single_process_batches() -> None:
    n, batch, world, seed, epoch = 240, 32, 4, 7, 3
    dataset = TensorDataset(torch.arange(n))
    generator = torch.Generator().manual_seed(seed + epoch)
    single = [b[0].tolist() for b in DataLoader(dataset, batch, shuffle=True, generator=generator)]
    shards = []
    for r in range(world):
        sampler = distributed.ShuffleShardSampler(dataset, num_replicas=world, rank=r, seed=seed)
        sampler.set_epoch(epoch)
        shards.append([b[0].tolist() for b in DataLoader(dataset, batch // world, sampler=sampler)])
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(single) == 8
    for k, expected in enumerate(single):
        together = [i for shard in shards for i in shard[k]]
        assert sorted(together) == sorted(expected)
    assert single[0] != sorted(single[0])  # it did shuffle


def test_running_stats_of_shards_combine_to_those_of_the_whole() -> None:
    values = torch.rand(3, 50, dtype=torch.float64) * torch.arange(1, 4)[:, None]
    defined = torch.rand(3, 50) > 0.2
    whole = RunningStats(3, torch.device("cpu"))
    whole.merge(values, defined)
    parts = [RunningStats(3, torch.device("cpu")) for _ in range(2)]
    parts[0].merge(values[:, :17], defined[:, :17])
    parts[0].merge(values[:, 40:], defined[:, 40:])
    parts[1].merge(values[:, 17:40], defined[:, 17:40])
    merged = RunningStats(3, torch.device("cpu"))
    for part in parts:
        merged.combine(part.state())
    for got, want in zip(merged.layer_stats(), whole.layer_stats(), strict=True):
        assert got[2:] == want[2:]
        assert got[0] == pytest.approx(want[0], rel=1e-12)
        assert got[1] == pytest.approx(want[1], rel=1e-12)
    assert merged.overall() == pytest.approx(whole.overall(), rel=1e-12)


def test_a_single_process_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.launch_from_env() is None
    assert not distributed.init(torch.device("cpu")) and not dist.is_initialized()
    assert list(distributed.shard_batches(range(7), limit=5)) == [0, 1, 2, 3, 4]
    assert distributed.rank_seed(123) == 123 and distributed.all_reduce_sum([2, 3]) == [2.0, 3.0]


def test_incomplete_torchrun_environment_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_PORT": "29500"}
    assert distributed.launch_from_env({**env, "MASTER_ADDR": "h"}) == distributed.Launch(1, 2, 1)
    with pytest.raises(distributed.DistributedError, match="MASTER_ADDR is not"):
        distributed.launch_from_env(env)
    with pytest.raises(distributed.DistributedError, match="do not fit WORLD_SIZE=2"):
        distributed.launch_from_env({**env, "MASTER_ADDR": "h", "RANK": "2"})
    with pytest.raises(ConfigError, match="multiple of 2"):
        distributed.per_rank_batch_size(33, 2)
    # Through the command line: one line, exit 2, before anything is trained.
    from lsakit.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "1", "--out", os.devnull + "-never"])
    assert exit_info.value.code == 2
    assert not dist.is_initialized()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q", "-p", "no:xdist"]))
