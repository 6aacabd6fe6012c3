"""Pretrained weights through each ecosystem's own loading code, against local servers and caches.

torchvision downloads with its weights API from a local HTTP server (a ``torchvision.models.Weights``
whose URL is the server's, the file named with its own sha256 prefix), into ``$TORCH_HOME``; timm
and transformers download from a local Hugging Face hub (``tests/hubserver.py``, ``HF_ENDPOINT``,
``HF_HOME`` per test, in subprocesses: the hub settings are read when the libraries are imported);
RobustBench reads a checkpoint put in its model folder. No loader is mocked.

For each source: the loaded weights are the served ones; logits through lsakit's preprocessing
(the data transform, the normalization inside the model) equal those through the ecosystem's own
preprocessing on the same images; every attack stays within ε in [0, 1] pixel space; a second
run works from the cache with the server stopped; bad input is one line.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from hubserver import (
    FileServer,
    HubServer,
    client_env,
    dataset_card,
    run_client,
    torch_hub_filename,
)
from lsakit import models, perturb
from lsakit.checkpoint import load_checkpoint, read_meta, save_checkpoint
from lsakit.errors import ConfigError
from lsakit.models.pretrained import INPUT_NORMALIZE

TESTS = Path(__file__).resolve().parent


def _bare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without lsakit's input normalization (the weights as served)."""
    return {k: v for k, v in state.items() if not k.startswith(INPUT_NORMALIZE)}


# -- torchvision -------------------------------------------------------------------------------


@pytest.fixture
def squeezenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A squeezenet1_1 state dict (random weights, 4.7 MB) as torchvision serves weights."""
    tv = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    served = tv.models.get_model("squeezenet1_1", weights=None).eval()
    buffer = io.BytesIO()
    torch.save(served.state_dict(), buffer)
    data = buffer.getvalue()
    classification = tv.transforms._presets.ImageClassification
    return {
        "tv": tv, "served": served, "data": data,
        "name": torch_hub_filename("squeezenet1_1", data),
        "cache": tmp_path / "torch" / "hub" / "checkpoints",
        "transforms": functools.partial(classification, crop_size=224, resize_size=256),
        "categories": [f"class {i}" for i in range(1000)],
    }  # fmt: skip


def _weights(fixture: dict[str, Any], url: str) -> Any:
    return fixture["tv"].models.Weights(
        url=url, transforms=fixture["transforms"], meta={"categories": fixture["categories"]}
    )


@pytest.mark.slow
def test_torchvision_weights_are_hash_checked_cached_and_loaded_offline(
    squeezenet: dict[str, Any],
) -> None:
    with FileServer() as server:
        url = server.add(f"/models/{squeezenet['name']}", squeezenet["data"])
        loaded = models.load("torchvision:squeezenet1_1", weights=_weights(squeezenet, url))
    # the served weights, with the weights' normalization inside
    state = loaded.model.state_dict()
    for key, value in squeezenet["served"].state_dict().items():
        assert torch.equal(state[key], value), key
    assert torch.equal(state[f"{INPUT_NORMALIZE}_mean"], torch.tensor([0.485, 0.456, 0.406]))
    cached = squeezenet["cache"] / squeezenet["name"]
    assert loaded.provenance is not None and loaded.provenance.to_json() == {
        "source": "torchvision", "name": squeezenet["name"], "file": str(cached),
        "sha256": hashlib.sha256(squeezenet["data"]).hexdigest(), "url": url,
    }  # fmt: skip
    assert loaded.labels is not None and loaded.labels[:2] == ("class 0", "class 1")
    pre = loaded.preprocessing
    assert pre is not None and (pre.resize, pre.crop, pre.interpolation) == (
        (256,),
        (224, 224),
        "bilinear",
    )
    # the server is gone: the cache answers, and the weights are the same
    again = models.load("torchvision:squeezenet1_1", weights=_weights(squeezenet, url))
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in state.items())

    # the ecosystem's own preprocessing and lsakit's give the same logits on the same images
    images = torch.rand(2, 3, 40, 50)
    theirs = squeezenet["served"](_weights(squeezenet, url).transforms()(images))
    ours = loaded.model.eval()(pre.transform(images))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_torchvision_refuses_a_bad_hash_a_damaged_cache_file_and_no_network(
    squeezenet: dict[str, Any],
) -> None:
    cache = squeezenet["cache"]
    with FileServer() as server:
        url = server.add("/models/squeezenet1_1-deadbeef.pth", squeezenet["data"])
        with pytest.raises(ConfigError, match=r"failed its hash check.*nothing was kept"):
            models.load("torchvision:squeezenet1_1", weights=_weights(squeezenet, url))
    assert not cache.exists() or not any(cache.iterdir())  # nothing kept
    # torchvision's own name for DEFAULT, damaged in the cache: refused and removed
    cache.mkdir(parents=True, exist_ok=True)
    damaged = cache / "squeezenet1_1-b8a52dc0.pth"
    damaged.write_bytes(squeezenet["data"][:1000])
    with pytest.raises(ConfigError, match=r"squeezenet1_1-b8a52dc0.pth is corrupted.*removed"):
        models.load("torchvision:squeezenet1_1", weights="DEFAULT")
    assert not damaged.exists()
    # nothing cached and nothing to download from: one line naming where the file goes
    server = FileServer().start()
    url = server.add(f"/models/{squeezenet['name']}", squeezenet["data"])
    server.stop()
    with pytest.raises(ConfigError) as caught:
        models.load("torchvision:squeezenet1_1", weights=_weights(squeezenet, url))
    message = str(caught.value)
    assert f"cannot download {url}" in message and str(cache / squeezenet["name"]) in message
    assert "\n" not in message


@pytest.mark.slow
def test_attacks_stay_within_eps_in_pixel_space_and_a_checkpoint_rebuilds_offline(
    squeezenet: dict[str, Any], tmp_path: Path
) -> None:
    with FileServer() as server:
        url = server.add(f"/models/{squeezenet['name']}", squeezenet["data"])
        loaded = models.load("torchvision:squeezenet1_1", weights=_weights(squeezenet, url))
    assert loaded.preprocessing is not None
    model = loaded.model.eval()
    x = loaded.preprocessing.transform(torch.rand(2, 3, 32, 32))
    assert x.shape == (2, 3, 224, 224) and float(x.min()) >= 0 and float(x.max()) <= 1
    y = model(x).argmax(1)
    eps = 4 / 255
    for attack in (
        perturb.FGSM(model, eps=eps), perturb.PGD(model, eps=eps, steps=2),
        perturb.APGD(model, eps=eps, steps=2), perturb.MIFGSM(model, eps=eps, steps=2),
    ):  # fmt: skip
        x_adv = attack(x, y)
        assert float((x_adv - x).abs().max()) <= eps + 1e-6, attack.name
        assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1, attack.name
    # a checkpoint stores the preprocessing instead of the weights: it rebuilds with no download
    path = save_checkpoint(tmp_path / "m.safetensors", model, model_name="torchvision:squeezenet1_1",
                           model_kwargs={"weights": _weights(squeezenet, url)})  # fmt: skip
    for file in squeezenet["cache"].glob("*"):
        file.unlink()
    rebuilt, meta = load_checkpoint(path)
    assert meta.preprocessing == loaded.preprocessing
    assert "weights" not in meta.model_kwargs
    torch.testing.assert_close(rebuilt(x), model(x))


# -- Hugging Face transformers and timm, from a local hub --------------------------------------

#: appended to the load scripts: PGD on the loaded model, in [0, 1] pixels
ATTACKED = """
from lsakit import perturb
x = loaded.preprocessing.transform(images)
y = loaded.model(x).argmax(1)
x_adv = perturb.PGD(loaded.model, eps=4 / 255, steps=2)(x, y)
result["attack_linf"] = float((x_adv - x).abs().max())
result["attack_range"] = [float(x_adv.min()), float(x_adv.max())]
"""

HF_LOAD = (
    """
import torch, transformers
from lsakit import models
loaded = models.load("hf:org/tiny-vit", revision=REVISION)
reference = transformers.AutoModelForImageClassification.from_pretrained(FOLDER).eval()
mine = loaded.model.model.state_dict()
result["same_weights"] = all(torch.equal(v, mine[k]) for k, v in reference.state_dict().items())
result["provenance"] = loaded.provenance.to_json()
result["labels"] = list(loaded.labels)
result["preprocessing"] = loaded.preprocessing.to_json()
torch.manual_seed(0)
images = torch.rand(2, 3, 12, 10)
processor = transformers.AutoImageProcessor.from_pretrained(FOLDER)
inputs = processor(images=list(images), do_rescale=False, return_tensors="pt")
theirs = reference(**inputs).logits
ours = loaded.model.eval()(loaded.preprocessing.transform(images))
result["logits_gap"] = float((ours - theirs).abs().max())
"""
    + ATTACKED
)

HF_ERRORS = """
from lsakit import models
from lsakit.errors import ConfigError
for name, spec, kwargs in (
    ("repo", "hf:org/missing", {}),
    ("revision", "hf:org/tiny-vit", {"revision": "no-such-branch"}),
    ("remote", "hf:org/remote-code", {}),
    ("pickle", "hf:org/bin-only", {}),
):
    try:
        models.load(spec, **kwargs)
        result[name] = "loaded"
    except ConfigError as err:
        result[name] = str(err)
"""


@pytest.fixture
def hub(tmp_path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=2, id2label={0: "cat", 1: "dog"},
        label2id={"cat": 0, "dog": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path / "tiny-vit"
    transformers.ViTForImageClassification(config).save_pretrained(folder, safe_serialization=True)
    transformers.ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(folder)
    server = HubServer().start()
    commit = server.add_folder("org/tiny-vit", folder)
    remote = json.loads((folder / "config.json").read_text())
    remote["auto_map"] = {"AutoConfig": "configuration_x.XConfig"}
    server.add_repo("org/remote-code", {"config.json": json.dumps(remote).encode()})
    binary = io.BytesIO()
    torch.save(transformers.ViTForImageClassification(config).state_dict(), binary)
    server.add_repo(
        "org/bin-only",
        {
            "config.json": (folder / "config.json").read_bytes(),
            "pytorch_model.bin": binary.getvalue(),
        },
    )
    yield {"server": server, "folder": folder, "commit": commit, "home": tmp_path / "home"}
    server.stop()


@pytest.mark.slow
def test_hf_hub_models_load_with_provenance_and_their_processors_preprocessing(hub: Any) -> None:
    code = HF_LOAD.replace("FOLDER", repr(str(hub["folder"])))
    online = run_client(code.replace("REVISION", "'main'"), hub["home"], hub["server"].endpoint)
    assert online["same_weights"]
    assert online["labels"] == ["cat", "dog"]
    assert online["provenance"]["revision"] == hub["commit"]
    file = hub["folder"] / "model.safetensors"
    assert online["provenance"]["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert online["preprocessing"]["resize"] == [8, 8] and online["preprocessing"]["mean"] == [
        0.5, 0.5, 0.5,
    ]  # fmt: skip
    assert online["logits_gap"] < 1e-4
    assert online["attack_linf"] <= 4 / 255 + 1e-6 and online["attack_range"][0] >= 0
    assert online["attack_range"][1] <= 1
    # the hub is gone and offline is on: the cache answers, by branch and by commit
    hub["server"].stop()
    for revision in ("'main'", repr(hub["commit"])):
        offline = run_client(
            code.replace("REVISION", revision), hub["home"], hub["server"].endpoint, offline=True
        )
        assert offline["same_weights"] and offline["provenance"] == online["provenance"]


@pytest.mark.slow
def test_hf_hub_bad_input_is_one_line(hub: Any) -> None:
    found = run_client(HF_ERRORS, hub["home"], hub["server"].endpoint)
    assert "no such repository" in found["repo"]
    assert "no such revision" in found["revision"]
    assert "needs remote code" in found["remote"]
    assert "no safetensors weights" in found["pickle"]
    for message in (found[k] for k in ("repo", "revision", "remote", "pickle")):
        assert "\n" not in message
    empty = run_client(
        "from lsakit import models\nfrom lsakit.errors import ConfigError\n"
        "try:\n    models.load('hf:org/tiny-vit')\nexcept ConfigError as err:\n"
        "    result['offline'] = str(err)\n",
        hub["home"] / "empty", hub["server"].endpoint, offline=True,
    )  # fmt: skip
    assert "not in the local cache" in empty["offline"] and "HF_HUB_OFFLINE" in empty["offline"]


TIMM_LOAD = (
    """
import torch, timm
from lsakit import models
loaded = models.load(SPEC, **KWARGS)
result["provenance"] = loaded.provenance.to_json()
result["preprocessing"] = loaded.preprocessing.to_json()
result["labels"] = list(loaded.labels or [])[:2]
state = loaded.model.state_dict()
from safetensors.torch import load_file
served = load_file(SERVED)
result["same_weights"] = all(torch.equal(v, state[k]) for k, v in served.items())
reference = timm.create_model("test_resnet.r160_in1k", pretrained=False).eval()
reference.load_state_dict(served)
transform = timm.data.create_transform(**timm.data.resolve_model_data_config(reference))
torch.manual_seed(0)
images = torch.rand(2, 3, 40, 48)
theirs = reference(torch.stack([transform(i) for i in images]))
ours = loaded.model.eval()(loaded.preprocessing.transform(images))
result["logits_gap"] = float((ours - theirs).abs().max())
"""
    + ATTACKED
)


@pytest.mark.slow
def test_timm_pretrained_and_hf_hub_names_load_through_timms_loader(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    served = timm.create_model("test_resnet.r160_in1k", pretrained=False).state_dict()
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in served.items()}, str(weights))
    config = {"architecture": "test_resnet", "num_classes": 1000,
              "pretrained_cfg": {"input_size": [3, 160, 160], "interpolation": "bilinear",
                                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                 "crop_pct": 0.95, "crop_mode": "center"}}  # fmt: skip
    with HubServer() as server:
        tagged = server.add_repo("timm/test_resnet.r160_in1k", {"model.safetensors": weights})
        own = server.add_repo(
            "org/tiny-timm",
            {"config.json": json.dumps(config).encode(), "model.safetensors": weights},
        )
        cases = {
            ("timm:test_resnet.r160_in1k", "{'pretrained': True}"): tagged,
            (f"timm:hf-hub:org/tiny-timm@{own}", "{}"): own,
        }
        for (spec, kwargs), commit in cases.items():
            code = (
                TIMM_LOAD.replace("SPEC", repr(spec)).replace("KWARGS", kwargs)
                .replace("SERVED", repr(str(weights)))
            )  # fmt: skip
            found = run_client(code, tmp_path / "home", server.endpoint)
            assert found["same_weights"], spec
            assert found["provenance"]["revision"] == commit, spec
            assert found["provenance"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
            assert found["preprocessing"]["resize"] == [168] and found["preprocessing"]["crop"] == [
                160, 160,
            ]  # fmt: skip
            assert found["logits_gap"] < 1e-4, spec
            assert found["attack_linf"] <= 4 / 255 + 1e-6, spec
            assert found["attack_range"][0] >= 0 and found["attack_range"][1] <= 1, spec
    # the server is gone: from the cache
    again = run_client(
        TIMM_LOAD.replace("SPEC", repr("timm:test_resnet.r160_in1k"))
        .replace("KWARGS", "{'pretrained': True}").replace("SERVED", repr(str(weights))),
        tmp_path / "home", server.endpoint, offline=True,
    )  # fmt: skip
    assert again["same_weights"] and again["labels"] == ["tench", "goldfish"]


# -- RobustBench -------------------------------------------------------------------------------


@pytest.fixture
def robust_zoo(tmp_path: Path) -> dict[str, Any]:
    """Ding2020MMA (CIFAR-10, L∞; a WRN-28-4, 23 MB) saved as RobustBench saves its checkpoints."""
    from importlib.util import find_spec

    if find_spec("robustbench") is None:
        pytest.skip("robustbench is not installed (pip install --no-deps robustbench==1.1.1)")
    from lsakit.models.robustbench import import_robustbench

    _, zoo, _ = import_robustbench()
    enums = __import__("robustbench.model_zoo.enums", fromlist=["enums"])
    entry = zoo.model_dicts[enums.BenchmarkDataset.cifar_10][enums.ThreatModel.Linf]["Ding2020MMA"]
    torch.manual_seed(0)
    reference = entry["model"]().eval()
    folder = tmp_path / "models"
    file = folder / "cifar10" / "Linf" / "Ding2020MMA.pt"
    file.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, file)
    return {"reference": reference, "folder": folder, "file": file}


def test_robustbench_loads_its_checkpoint_with_provenance_and_rebuilds_offline(
    robust_zoo: dict[str, Any], tmp_path: Path
) -> None:
    loaded = models.load("robustbench:Ding2020MMA", model_dir=str(robust_zoo["folder"]))
    state = loaded.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in robust_zoo["reference"].state_dict().items())
    assert loaded.provenance is not None
    assert loaded.provenance.sha256 == hashlib.sha256(robust_zoo["file"].read_bytes()).hexdigest()
    assert loaded.provenance.details == {"dataset": "cifar10", "threat_model": "Linf"}
    assert loaded.preprocessing is None  # CIFAR: the images as they are; normalization inside
    assert loaded.labels is not None and loaded.labels[:2] == ("airplane", "automobile")
    model = loaded.model.eval()
    x = torch.rand(2, 3, 32, 32)
    y = model(x).argmax(1)
    x_adv = perturb.PGD(model, eps=8 / 255, steps=2)(x, y)
    assert float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    path = save_checkpoint(tmp_path / "rb.safetensors", model, model_name="robustbench:Ding2020MMA",
                           model_kwargs={"model_dir": str(robust_zoo["folder"])})  # fmt: skip
    robust_zoo["file"].unlink()  # the rebuild needs the architecture only
    rebuilt, meta = load_checkpoint(path)
    assert "model_dir" not in meta.model_kwargs
    torch.testing.assert_close(rebuilt(x), model(x))


def test_robustbench_bad_input_is_one_line(robust_zoo: dict[str, Any]) -> None:
    folder = str(robust_zoo["folder"])
    with pytest.raises(ConfigError, match=r"unknown model 'robustbench:Ding2020'; did you mean"):
        models.load("robustbench:Ding2020", model_dir=folder)
    with pytest.raises(ConfigError, match="threat_model must be one of Linf, L2, corruptions"):
        models.load("robustbench:Ding2020MMA", model_dir=folder, threat_model="Linfinity")
    robust_zoo["file"].write_bytes(b"<html>Google Drive: quota exceeded</html>")
    with pytest.raises(ConfigError, match=r"Ding2020MMA.pt is not a checkpoint .*removed"):
        models.load("robustbench:Ding2020MMA", model_dir=folder)
    assert not robust_zoo["file"].exists()  # not left for the next run to trust
    # missing, and the network unreachable (a proxy on a closed local port): one line
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "lsakit", "evaluate", "-m", "robustbench:Ding2020MMA",
         "--model-arg", f"model_dir={folder}", "-d", "cifar10", "--suite", "standard"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert "Ding2020MMA.pt is not there and cannot be downloaded" in line, done.stderr


def test_evaluate_suite_prints_the_leaderboard_beside_lsakits_numbers(
    robust_zoo: dict[str, Any], tmp_path: Path
) -> None:
    import numpy as np

    # images the (random-weight) model gets wrong: the suite has nothing to attack, so it is
    # quick; the leaderboard row and lsakit's row are what this test reads
    x = torch.rand(4, 3, 32, 32)
    wrong = (robust_zoo["reference"](x).argmax(1) + 1) % 10
    np.savez(
        tmp_path / "cifar-like.npz", x=x.numpy(), y=np.arange(4), x_test=x.numpy(),
        y_test=wrong.numpy(),
    )  # fmt: skip
    info = tmp_path / "Ding2020MMA.json"
    info.write_text(json.dumps({"eps": "8/255", "clean_acc": "84.36", "autoattack_acc": "41.44"}))
    done = subprocess.run(
        [sys.executable, "-m", "lsakit", "--threads", "1", "evaluate",
         "-m", "robustbench:Ding2020MMA", "--model-arg", f"model_dir={robust_zoo['folder']}",
         "-d", str(tmp_path / "cifar-like.npz"), "--suite", "standard", "--eps", "0.0313725",
         "--no-checks", "--leaderboard", str(info), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pretrained robustbench:Ding2020MMA: robustbench Ding2020MMA" in done.stdout
    rows = [line for line in done.stdout.splitlines() if "leaderboard (AutoAttack)" in line]
    assert len(rows) == 1 and "8/255" in rows[0] and "84.36" in rows[0] and "41.44" in rows[0]
    ours = next(line for line in done.stdout.splitlines() if "lsakit (4 samples)" in line)
    assert ours.count("0.00") == 2  # every image misclassified clean
    assert "warning" not in done.stderr  # the same ε as the leaderboard's
    (result,) = [p for p in (tmp_path / "out").glob("suite-*.json") if ".state." not in p.name]
    meta = json.loads(result.read_text())["meta"]
    assert meta["weights"]["sha256"] == hashlib.sha256(robust_zoo["file"].read_bytes()).hexdigest()


# -- the README's "Pretrained models" section, as written, against a local hub -------------------

MNIST = Path(os.environ.get("LSAKIT_TEST_DATA", TESTS.parents[1] / "shared" / "data"))


def _readme_hub(tmp_path: Path) -> HubServer:
    """A hub serving the repositories the README names, with random weights."""
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    from PIL import Image
    from safetensors.torch import save_file

    from lsakit import data

    torch.manual_seed(0)
    resnet = tmp_path / "resnet18.safetensors"
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(resnet))
    names = {i: f"class {i}" for i in range(1000)}
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=1000, id2label=names,
        label2id={v: k for k, v in names.items()}, architectures=["ResNetForImageClassification"],
    )  # fmt: skip
    folder = tmp_path / "resnet-50"
    transformers.ResNetForImageClassification(config).save_pretrained(folder)
    transformers.ConvNextImageProcessor(
        size={"shortest_edge": 224}, crop_pct=0.875
    ).save_pretrained(folder)
    mnist = tmp_path / "mnist"
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    for split in ("train", "test"):
        x, y = data.load_tensors("mnist", split, limit=32, data_dir=MNIST)
        images = []
        for pixels in (x[:, 0] * 255).round().to(torch.uint8).numpy():
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            images.append({"bytes": buffer.getvalue(), "path": None})
        (mnist / "data").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(
            {"image": images, "label": y.tolist()}, features=features
        ).to_parquet(str(mnist / "data" / f"{split}-00000-of-00001.parquet"))
    (mnist / "README.md").write_text(dataset_card(["train", "test"]))
    server = HubServer().start()
    server.add_repo("timm/resnet18.a1_in1k", {"model.safetensors": resnet})
    server.add_folder("microsoft/resnet-50", folder)
    server.add_folder("ylecun/mnist", mnist, kind="dataset")
    return server


@pytest.mark.slow
def test_the_readme_pretrained_section_runs_as_written_against_a_local_hub(
    tmp_path: Path,
) -> None:
    import readme_blocks

    if not (MNIST / "mnist").is_dir():
        pytest.skip(f"needs the real MNIST in {MNIST / 'mnist'} (or $LSAKIT_TEST_DATA)")
    blocks = readme_blocks.of_kind("tested: hub")
    assert [b.language for b in blocks] == ["bash", "python"]
    server = _readme_hub(tmp_path)
    env = client_env(
        tmp_path, server.endpoint, LSAKIT_DATA=str(MNIST), LSAKIT_PROGRESS_INTERVAL="inf",
        PYTHONWARNINGS="ignore",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )  # fmt: skip
    printed = []
    try:
        for line in readme_blocks.commands(blocks[0]):
            assert line.startswith("lsakit "), line
            done = subprocess.run(
                ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
            printed.append(" ".join(done.stdout.split()))  # rich wraps long lines
        done = subprocess.run(
            [sys.executable, "-c", blocks[1].text], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        server.stop()
    commit = server.resolve("timm/resnet18.a1_in1k")
    assert f"revision {commit[:12]}" in printed[0] and "MVL (pgd" in printed[0]
    assert "1000 classes (tench, goldfish, great white shark, …)" in printed[0]
    assert "MVL (η = 0.5) to regularize:" in printed[1]
    meta = read_meta(tmp_path / "runs" / "pretrained-atlr" / "model.safetensors")
    assert meta.extra["initial_weights"]["revision"] == commit
    assert meta.preprocessing is not None and meta.preprocessing.crop == (224, 224)
    lsa = json.loads((tmp_path / "runs" / "hf-lsa" / "lsa.json").read_text())
    assert lsa["meta"]["weights"]["revision"] == server.resolve("microsoft/resnet-50")
    data_commit = server.resolve("ylecun/mnist", kind="dataset")
    assert lsa["meta"]["data_provenance"]["commit"] == data_commit
    assert "MVL (pgd" in printed[2]
    assert f"revision {commit[:12]}" in done.stdout and "('tench', 'goldfish'" in done.stdout


def test_bad_pretrained_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, squeezenet: dict[str, Any]
) -> None:
    """Through the command line: refused before any work, nothing written."""
    cases = [
        (["analyze", "-m", "torchvision:squeezenet1_1", "--model-arg", "weights=IMAGENET9",
          "-d", "mnist"], "unknown weights 'IMAGENET9'"),
        (["evaluate", "-m", "robustbench:Nope2020", "-d", "cifar10", "--suite", "standard"],
         "unknown model 'robustbench:Nope2020'"),
        (["evaluate", "-m", "timm:resnet18", "-d", "mnist"],
         "give --checkpoint (a trained model), or --model with pretrained weights"),
        (["analyze", "-m", "hf:org/missing", "-d", "mnist"], "not in the local cache"),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    for args, message in cases:
        out = tmp_path / "out"
        done = subprocess.run(
            [sys.executable, "-m", "lsakit", *args, "--out", str(out)], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("error: ") and message in lines[0], lines[0]
        assert not out.exists(), args


def test_the_normalization_inside_keeps_layer_names_and_is_never_added_twice() -> None:
    import copy
    import pickle

    from helpers import tiny_cnn

    model = tiny_cnn()
    before = [name for name, _ in model.named_modules()]
    x = torch.rand(3, 1, 8, 8)
    expected = model((x - 0.25) / 0.5)
    normalized = models.add_input_normalization(model, [0.25], [0.5])
    assert normalized is model  # in place: no wrapper, no prefix
    assert [name for name, _ in model.named_modules()] == before
    torch.testing.assert_close(model(x), expected)
    assert {f"{INPUT_NORMALIZE}_mean", f"{INPUT_NORMALIZE}_std"} <= set(model.state_dict())
    for copied in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(copied(x), expected)
    with pytest.raises(ConfigError, match="already normalizes its input"):
        models.add_input_normalization(model, [0.0], [1.0])
    with pytest.raises(ConfigError, match="already normalizes its input"):
        models.add_input_normalization(
            torch.nn.Sequential(models.Normalize([0.5], [0.5])), [0], [1]
        )


def test_robustbench_imagenet_models_take_their_own_input_transform(
    robust_zoo: dict[str, Any],
) -> None:
    source = models.resolve("robustbench:Salman2020Do_R50", {"dataset": "imagenet"})
    recorded = source.portable({"dataset": "imagenet"})["preprocessing"]
    pre = models.Preprocessing.from_json(recorded)
    # RobustBench's Res256Crop224: Resize(256), CenterCrop(224), ToTensor(); no mean/std (the
    # zoo model normalizes inside)
    assert (pre.resize, pre.crop, pre.interpolation, pre.mean) == (
        (256,),
        (224, 224),
        "bilinear",
        None,
    )
    assert pre.transform(torch.rand(1, 3, 300, 400)).shape == (1, 3, 224, 224)
