"""``--dataset hf:ORG/NAME`` (lsakit.data.hub) against the local hub of ``hubserver``.

The ``datasets`` library reads ``HF_ENDPOINT``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is
imported, so every load runs lsakit in a subprocess pointed at the server (the pattern of
test_hubserver.py); the subprocess prints what it found as JSON on its last line. The data sets are
small parquet repos written with ``datasets`` itself: an ``Image`` column of PNGs and a
``ClassLabel`` column, as ``push_to_hub`` writes them.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from hubserver import HubServer, client_env, dataset_card, run_client
from lsakit import data
from lsakit.config import preset
from lsakit.data import hub as data_hub
from lsakit.domain import UNIT
from lsakit.errors import ConfigError

CLASSES = ["cat", "dog", "fox"]


def run_lsakit(code: str, home: Path, endpoint: str, *, offline: bool = False) -> dict[str, Any]:
    """Run ``code`` (with ``result = {}``, ``data``, ``hub``, ``LsakitError`` and ``tensor``
    — a tensor as a JSON-able list — in scope) in a fresh Python against the hub at
    ``endpoint`` with the Hugging Face caches under ``home``; return ``result``.

    ``catch(key, call)`` stores ``call()``'s result, or the lsakit error it raised as
    ``{"error": class name, "message": ...}`` (any other exception fails the test).
    """
    prelude = """
        import json as _json
        import torch
        torch.set_num_threads(1)
        from lsakit import data
        from lsakit.data import hub
        from lsakit.errors import LsakitError
        result = {}

        def tensor(t):
            return {"shape": list(t.shape), "dtype": str(t.dtype), "values": t.flatten().tolist()}

        def catch(key, call):
            try:
                result[key] = call()
            except LsakitError as error:
                result[key] = {"error": type(error).__name__, "message": str(error)}
        """
    return run_client(
        textwrap.dedent(prelude) + textwrap.dedent(code), home, endpoint, offline=offline
    )


def as_tensor(found: dict[str, Any]) -> torch.Tensor:
    dtype = getattr(torch, found["dtype"].removeprefix("torch."))
    return torch.tensor(found["values"], dtype=dtype).reshape(found["shape"])


# ----------------------------------------------------------------------------------- the repos


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def expected_pixels(
    images: list[bytes], mode: str = "RGB", size: tuple[int, int] | None = None
) -> torch.Tensor:
    """What lsakit must return: Pillow's pixels (converted, resized bilinear) / 255, NCHW."""
    arrays = []
    for raw in images:
        with Image.open(io.BytesIO(raw)) as image:
            converted = image.convert(mode)
            if size is not None:
                converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(converted, dtype=np.uint8)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)).float() / 255


class Repo:
    """A parquet data set repo on disk: columns, per split, and the PNG bytes it holds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: dict[str, list[bytes]] = {}
        self.columns: dict[str, dict[str, list[Any]]] = {}

    def split(self, datasets: Any, features: Any, name: str, columns: dict[str, list[Any]]) -> None:
        images = columns.pop("_images")
        self.images[name] = images
        self.columns[name] = columns
        rows = {**columns}
        image_column = next(k for k, f in features.items() if type(f).__name__ == "Image")
        rows[image_column] = [{"bytes": raw, "path": None} for raw in images]
        table = datasets.Dataset.from_dict(rows, features=features)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(self.root / "data" / f"{name}-00000-of-00001.parquet"))


def noise_images(n: int, seed: int, sizes: list[tuple[int, int]] | None = None) -> list[bytes]:
    """``n`` random RGB PNGs (``sizes`` cycled as (height, width); default 8×8)."""
    rng = np.random.default_rng(seed)
    shapes = sizes or [(8, 8)]
    return [
        png(rng.integers(0, 256, (*shapes[i % len(shapes)], 3), dtype=np.uint8)) for i in range(n)
    ]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Repo]:
    """The data sets, written once per module:

    - ``tiny``: train (12) and test (6), 8×8 RGB, ClassLabel cat/dog/fox, card with features;
    - ``tiny_v1``: the same repo's other revision — 4 train / 3 test, other pixels and labels;
    - ``trainval``: train (8) and validation (4), no features in the card, columns ``img``
      (Image, 8×8 and 10×6 mixed), ``target`` (ClassLabel) and ``caption`` (string);
    - ``trainonly``: one train split (10 rows), 6×6;
    - ``ambiguous``: an Image column and two int columns ``a`` and ``b``, no ClassLabel.
    """
    datasets = pytest.importorskip("datasets", reason="datasets is not installed in this venv")
    base = tmp_path_factory.mktemp("hub-repos")
    labels = datasets.ClassLabel(names=CLASSES)
    made: dict[str, Repo] = {}

    def label_list(n: int, offset: int = 0) -> list[int]:
        return [(i + offset) % 3 for i in range(n)]

    features = datasets.Features({"image": datasets.Image(), "label": labels})
    tiny = made["tiny"] = Repo(base / "tiny")
    tiny.split(
        datasets, features, "train", {"_images": noise_images(12, 1), "label": label_list(12)}
    )
    tiny.split(
        datasets, features, "test", {"_images": noise_images(6, 2), "label": label_list(6, 1)}
    )
    (tiny.root / "README.md").write_text(dataset_card(["train", "test"], CLASSES))

    v1 = made["tiny_v1"] = Repo(base / "tiny_v1")
    v1.split(datasets, features, "train", {"_images": noise_images(4, 3), "label": [2, 1, 0, 2]})
    v1.split(datasets, features, "test", {"_images": noise_images(3, 4), "label": [1, 1, 0]})
    (v1.root / "README.md").write_text(dataset_card(["train", "test"], CLASSES))

    features = datasets.Features(
        {"img": datasets.Image(), "target": labels, "caption": datasets.Value("string")}
    )
    mixed = [(8, 8), (10, 6)]
    trainval = made["trainval"] = Repo(base / "trainval")
    for split, n, seed in (("train", 8, 5), ("validation", 4, 6)):
        columns = {
            "_images": noise_images(n, seed, mixed),
            "target": label_list(n),
            "caption": [f"{split} {i}" for i in range(n)],
        }
        trainval.split(datasets, features, split, columns)
    (trainval.root / "README.md").write_text(dataset_card(["train", "validation"]))

    features = datasets.Features({"image": datasets.Image(), "label": labels})
    trainonly = made["trainonly"] = Repo(base / "trainonly")
    images = noise_images(10, 7, [(6, 6)])
    trainonly.split(datasets, features, "train", {"_images": images, "label": label_list(10)})
    (trainonly.root / "README.md").write_text(dataset_card(["train"]))

    features = datasets.Features(
        {"image": datasets.Image(), "a": datasets.Value("int64"), "b": datasets.Value("int64")}
    )
    ambiguous = made["ambiguous"] = Repo(base / "ambiguous")
    columns = {"_images": noise_images(6, 8), "a": [0, 1, 0, 1, 0, 1], "b": [3, 2, 1, 0, 1, 2]}
    ambiguous.split(datasets, features, "train", columns)
    (ambiguous.root / "README.md").write_text(dataset_card(["train"]))
    return made


@pytest.fixture
def server(repos: dict[str, Repo]) -> Iterator[HubServer]:
    with HubServer() as hub:
        hub.add_folder("org/tiny", repos["tiny_v1"].root, kind="dataset", revision="v1")
        hub.add_folder("org/tiny", repos["tiny"].root, kind="dataset")  # main: the last added
        for name in ("trainval", "trainonly", "ambiguous"):
            hub.add_folder(f"org/{name}", repos[name].root, kind="dataset")
        yield hub


def data_requests(hub: HubServer) -> list[str]:
    """The requests for data files (parquet), in order."""
    return [line for line in hub.requests if ".parquet" in line.split(" ")[1]]


def one_line_error(found: Any, kind: str, *fragments: str) -> None:
    assert isinstance(found, dict) and found.get("error") == kind, found
    assert "\n" not in found["message"] and "Traceback" not in found["message"]
    for fragment in fragments:
        assert fragment in found["message"], (fragment, found["message"])


# ------------------------------------------------------------------- no network, no datasets


def test_hub_names_options_domain_and_preset_need_no_network() -> None:
    assert data.is_user_dataset("hf:org/name") and data.is_user_dataset(" hf:name")
    assert not data.is_user_dataset("mnist")
    assert data_hub.repo_of("hf:org/name") == "org/name" and data_hub.repo_of("hf:gpt2") == "gpt2"
    for bad in ("hf:", "hf:a/b/c", "hf:../x", "hf:org/", "hf:org name"):
        with pytest.raises(ConfigError, match="hf:"):
            data.info(bad)
    with pytest.raises(ConfigError, match=r"unknown option 'colour'.*valid: .*image_column"):
        data.info("hf:org/name", colour="red")
    for option, value, message in (
        ("size", 0, "size"),
        ("mode", "CMYK", "mode"),
        ("revision", ["main"], "revision"),
        ("test_fraction", 1.5, "test_fraction"),
    ):
        with pytest.raises(ConfigError, match=message):
            data.info("hf:org/name", **{option: value})
    # The domain and the recipe come from the name alone: the unit box, the user preset.
    assert data.domain("hf:org/name", size=8) == UNIT
    recipe = preset("hf:org/name", size=8)
    assert recipe.train.model == "" and recipe.train.data_options == {"size": 8}
    with pytest.raises(ConfigError, match=r"hf:ORG/NAME"):
        data.info("hf_org")  # an unknown name's message lists the hub form


def test_without_the_datasets_package_one_line_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets → ModuleNotFoundError
    with pytest.raises(ConfigError) as caught:
        data.load_tensors("hf:org/name", "test")
    message = str(caught.value)
    assert "pip install 'lsakit[datasets]'" in message and "hf:org/name" in message
    assert "\n" not in message


# ----------------------------------------------------------------------------- online loading

LOAD_ALL = """
catch("info", lambda: data.info("hf:org/tiny").__dict__)
x, y = data.load_tensors("hf:org/tiny", "test")
result["x_test"], result["y_test"] = tensor(x), tensor(y)
x, y = data.load_tensors("hf:org/tiny", "train")
result["x_train"], result["y_train"] = tensor(x), tensor(y)
x, y = data.load_tensors("hf:org/tiny", "test", limit=2)  # prepared: sliced from the cache
result["x_limit"], result["y_limit"] = tensor(x), tensor(y)
x, y = data.load_tensors("hf:org/tiny", "test", size=[4, 5], mode="L")
result["x_small"] = tensor(x)
x, y = hub.load_hub("hf:org/tiny", "test", {}, image_transform=lambda t: t.flip(-1) * 0.5)
result["x_transformed"] = tensor(x)
heights = iter(range(1, 100))
catch("bad_transform", lambda: hub.load_hub(
    "hf:org/tiny", "test", {}, image_transform=lambda t: t[:, : next(heights)]
))
batches = list(data.load("hf:org/tiny", "test", batch_size=4, shuffle=False))
result["batches"] = [list(b[0].shape) for b in batches]
result["provenance"] = hub.provenance("hf:org/tiny", {})
"""


@pytest.mark.slow
def test_load_gives_the_served_pixels_labels_and_classes(
    server: HubServer, repos: dict[str, Repo], tmp_path: Path
) -> None:
    tiny = repos["tiny"]
    found = run_lsakit(LOAD_ALL, tmp_path / "home", server.endpoint)
    commit = server.resolve("org/tiny", kind="dataset")

    assert torch.equal(as_tensor(found["x_test"]), expected_pixels(tiny.images["test"]))
    assert as_tensor(found["y_test"]).tolist() == tiny.columns["test"]["label"]
    assert found["y_test"]["dtype"] == "torch.int64" and found["x_test"]["dtype"] == "torch.float32"
    assert torch.equal(as_tensor(found["x_train"]), expected_pixels(tiny.images["train"]))
    assert as_tensor(found["y_train"]).tolist() == tiny.columns["train"]["label"]
    assert torch.equal(as_tensor(found["x_limit"]), expected_pixels(tiny.images["test"][:2]))
    small = expected_pixels(tiny.images["test"], mode="L", size=(4, 5))
    assert small.shape == (6, 1, 4, 5) and torch.equal(as_tensor(found["x_small"]), small)
    transformed = expected_pixels(tiny.images["test"]).flip(-1) * 0.5
    assert torch.equal(as_tensor(found["x_transformed"]), transformed)
    one_line_error(found["bad_transform"], "DataError", "differ in size", "image_transform")
    assert found["batches"] == [[4, 3, 8, 8], [2, 3, 8, 8]]

    info = found["info"]
    assert info["class_names"] == CLASSES and info["num_classes"] == 3
    assert info["input_shape"] == [3, 8, 8] and info["default_model"] == ""
    for fragment in ("org/tiny", "revision main", commit, "3 classes"):
        assert fragment in info["description"]
    assert found["provenance"] == {
        "source": "hf-datasets",
        "repo": "org/tiny",
        "revision": "main",
        "commit": commit,
        "config": "default",
        "split": {"train": "train", "test": "test"},
        "seeded_split": None,
        "image_column": "image",
        "label_column": "label",
        "datasets_version": found["provenance"]["datasets_version"],
    }
    assert server.unhandled == []


LOAD_LIMITED = """
x, y = data.load_tensors("hf:org/tiny", "test", limit=2)
result["x"], result["y"] = tensor(x), tensor(y)
"""


@pytest.mark.slow
def test_limit_reads_only_the_split_asked_for(
    server: HubServer, repos: dict[str, Repo], tmp_path: Path
) -> None:
    # Nothing cached: a limited load streams the one split (the parquet footer and its first
    # file, with Range requests) instead of downloading every split's files in full.
    found = run_lsakit(LOAD_LIMITED, tmp_path / "home", server.endpoint)
    tiny = repos["tiny"]
    assert torch.equal(as_tensor(found["x"]), expected_pixels(tiny.images["test"][:2]))
    assert as_tensor(found["y"]).tolist() == tiny.columns["test"]["label"][:2]
    limited = data_requests(server)
    assert limited and all("/data/test-" in line for line in limited)
    ranges = [re.search(r"Range: bytes=(\d+)-(\d+)", line) for line in limited]
    assert all(ranges)  # only Range requests
    read = sum(int(m.group(2)) + 1 - int(m.group(1)) for m in ranges if m)
    files = {path.name: path.stat().st_size for path in (tiny.root / "data").iterdir()}
    assert read <= files["test-00000-of-00001.parquet"] < sum(files.values())

    server.clear_requests()
    run_lsakit(LOAD_LIMITED.replace("limit=2", "limit=None"), tmp_path / "full", server.endpoint)
    full = data_requests(server)
    assert any("/data/train-" in line for line in full)  # a full load prepares every split
    print("limit=2:", limited, "\nfull:", full)


# ------------------------------------------------------------------------- offline and caches

OFFLINE = """
x, y = data.load_tensors("hf:org/tiny", "test")
result["x"], result["y"] = tensor(x), tensor(y)
x, y = data.load_tensors("hf:org/tiny", "test", limit=3)
result["x_limit"] = tensor(x)
result["commit"] = hub.provenance("hf:org/tiny", {})["commit"]
catch("other_revision", lambda: data.info("hf:org/tiny", revision="v1").description)
catch("other_repo", lambda: data.info("hf:org/trainonly").description)
"""


@pytest.mark.slow
def test_offline_reads_the_cache_and_fails_in_one_line_without_it(
    server: HubServer, repos: dict[str, Repo], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    online = run_lsakit(OFFLINE, home, server.endpoint)
    commit = server.resolve("org/tiny", kind="dataset")
    assert online["commit"] == commit and "error" not in online["other_repo"]
    server.stop()

    offline = run_lsakit(OFFLINE, home, server.endpoint, offline=True)
    expected = expected_pixels(repos["tiny"].images["test"])
    assert torch.equal(as_tensor(offline["x"]), expected)
    assert torch.equal(as_tensor(offline["x_limit"]), expected[:3])
    assert offline["y"] == online["y"] and offline["commit"] == commit
    # v1 and main are two cached commits; offline, datasets reads its latest one whatever the
    # revision, so lsakit checks the commit against the revision's ref and refuses a mismatch.
    one_line_error(offline["other_revision"], "DataError", "hf:org/tiny", "revision v1")

    empty = run_lsakit(
        'catch("info", lambda: data.info("hf:org/tiny").description)\n'
        'catch("load", lambda: data.load_tensors("hf:org/tiny", "test", limit=1)[1].tolist())',
        tmp_path / "empty",
        server.endpoint,
        offline=True,
    )
    for key in ("info", "load"):
        one_line_error(empty[key], "DataError", "hf:org/tiny", "HF_HUB_OFFLINE", "network")


# ------------------------------------------------------------------- columns, splits, options

COLUMNS = """
for key, name, options in (
    ("trainval", "hf:org/trainval", {"size": 4}),
    ("trainonly", "hf:org/trainonly", {}),
    ("trainonly_half", "hf:org/trainonly", {"test_fraction": 0.5, "data_seed": 3}),
    ("ambiguous_b", "hf:org/ambiguous", {"label_column": "b"}),
    ("explicit", "hf:org/trainval", {"image_column": "img", "label_column": "target",
                                     "size": 4, "test_split": "train"}),
):
    for split in ("train", "test"):
        def load():
            x, y = data.load_tensors(name, split, **options)
            return {"x": tensor(x), "y": tensor(y)}
        catch(f"{key}_{split}", load)
    # after the loads: the row counts are known once the splits are prepared
    catch(key + "_info", lambda: data.info(name, **options).__dict__)
result["trainonly_provenance"] = hub.provenance("hf:org/trainonly", {})
catch("mixed_sizes", lambda: data.load_tensors("hf:org/trainval", "test")[1].tolist())
for key, options in (
    ("ambiguous", {}),
    ("ambiguous_image", {"label_column": "image"}),
    ("no_column", {"image_column": "picture"}),
    ("string_label", {"label_column": "caption"}),
):
    repo = "hf:org/ambiguous" if key.startswith("ambiguous") else "hf:org/trainval"
    catch(key, lambda: data.info(repo, **options).description)
"""


@pytest.mark.slow
def test_columns_splits_and_options(
    server: HubServer, repos: dict[str, Repo], tmp_path: Path
) -> None:
    found = run_lsakit(COLUMNS, tmp_path / "home", server.endpoint)

    # No features in the card: read from the parquet schema. test → the validation split.
    trainval = repos["trainval"]
    info = found["trainval_info"]
    assert info["class_names"] == CLASSES and info["input_shape"] == [3, 4, 4]
    assert (
        "columns img, target" in info["description"] and "test: validation" in info["description"]
    )
    test = found["trainval_test"]
    assert torch.equal(
        as_tensor(test["x"]), expected_pixels(trainval.images["validation"], size=(4, 4))
    )
    assert as_tensor(test["y"]).tolist() == trainval.columns["validation"]["target"]
    assert as_tensor(found["trainval_train"]["y"]).tolist() == trainval.columns["train"]["target"]
    one_line_error(found["mixed_sizes"], "DataError", "differ in size", "size=N")

    # Only a train split: a seeded split of it, disjoint, the same for every call.
    trainonly = repos["trainonly"]
    every = expected_pixels(trainonly.images["train"])
    for key, n_test in (("trainonly", 2), ("trainonly_half", 5)):
        x_train, x_test = (
            as_tensor(found[f"{key}_train"]["x"]),
            as_tensor(found[f"{key}_test"]["x"]),
        )
        assert (len(x_train), len(x_test)) == (10 - n_test, n_test)
        rows = [int((every == image).flatten(1).all(1).nonzero()) for image in (*x_train, *x_test)]
        assert sorted(rows) == list(range(10))  # every row once: disjoint, nothing lost
        assert f"{10 - n_test} train / {n_test} test" in found[f"{key}_info"]["description"]
    assert found["trainonly_provenance"]["split"] == {"train": "train", "test": "train"}
    assert found["trainonly_provenance"]["seeded_split"] == {"test_fraction": 0.2, "data_seed": 0}
    # test_split naming the training split: the seeded split, too.
    assert len(as_tensor(found["explicit_test"]["x"])) == 2

    # An integer label column given explicitly: classes 0 … max of the training labels.
    ambiguous = repos["ambiguous"]
    assert found["ambiguous_b_info"]["class_names"] == ["0", "1", "2", "3"]
    labels = as_tensor(found["ambiguous_b_train"]["y"]).tolist()
    labels += as_tensor(found["ambiguous_b_test"]["y"]).tolist()
    assert sorted(labels) == sorted(ambiguous.columns["train"]["b"])

    one_line_error(
        found["ambiguous"], "ConfigError", "no ClassLabel column", "a (int64)", "b (int64)",
        "label_column=NAME",
    )  # fmt: skip
    one_line_error(found["ambiguous_image"], "ConfigError", "'image' is Image", "label_column=")
    one_line_error(found["no_column"], "ConfigError", "no column 'picture'", "img (Image)")
    one_line_error(found["string_label"], "ConfigError", "'caption' is string", "label_column=")


# ------------------------------------------------------------------------------------ errors

ERRORS = """
catch("repo", lambda: data.info("hf:org/missing").description)
catch("revision", lambda: data.load_tensors("hf:org/tiny", "test", revision="nope")[1].tolist())
catch("config", lambda: data.info("hf:org/tiny", config="nope").description)
catch("split", lambda: data.load_tensors("hf:org/tiny", "test", test_split="dev")[1].tolist())
catch("train_split", lambda: data.info("hf:org/tiny", train_split="all").description)
catch("script", lambda: data.info("hf:org/script").description)
x, y = data.load_tensors("hf:org/tiny", "test", revision="v1")
result["v1"] = {"y": tensor(y), "provenance": hub.provenance("hf:org/tiny", {"revision": "v1"})}
x, y = data.load_tensors("hf:org/tiny", "test", revision=V1)
result["v1_sha"] = tensor(y)
"""


@pytest.mark.slow
def test_unknown_repo_revision_config_split_and_scripts_are_one_line(
    server: HubServer, repos: dict[str, Repo], tmp_path: Path
) -> None:
    ran = tmp_path / "script-ran"
    script = f"open({str(ran)!r}, 'w').write('ran')\n".encode()
    server.add_repo(
        "org/script", {"script.py": script, "README.md": b"# a script\n"}, kind="dataset"
    )
    v1 = server.resolve("org/tiny", "v1", kind="dataset")
    found = run_lsakit(ERRORS.replace("V1", repr(v1)), tmp_path / "home", server.endpoint)

    one_line_error(found["repo"], "ConfigError", "hf:org/missing", "no such data set")
    one_line_error(found["revision"], "ConfigError", "no revision 'nope'", "revision=")
    one_line_error(found["config"], "ConfigError", "no config 'nope'", "configs: default")
    one_line_error(found["split"], "ConfigError", "no split 'dev'", "train, test", "test_split=")
    one_line_error(found["train_split"], "ConfigError", "no split 'all'", "train_split=")
    one_line_error(found["script"], "ConfigError", "loading script", "never runs")
    assert not ran.exists()

    # Another revision: its own rows, and its commit in the provenance.
    assert as_tensor(found["v1"]["y"]).tolist() == repos["tiny_v1"].columns["test"]["label"]
    assert found["v1"]["provenance"]["commit"] == v1
    assert found["v1"]["provenance"]["revision"] == "v1"
    assert as_tensor(found["v1_sha"]).tolist() == repos["tiny_v1"].columns["test"]["label"]


# ----------------------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_lists_data_sets_and_rejects_a_missing_hub_data_set_before_training(
    server: HubServer, tmp_path: Path
) -> None:
    env = client_env(tmp_path / "home", server.endpoint)
    listing = subprocess.run(
        [sys.executable, "-m", "lsakit", "datasets"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert all(name in listing.stdout for name in data.names())

    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "lsakit", "--threads", "1", "analyze", "-d", "hf:org/missing",
         "-m", "model_b", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hf:org/missing" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "training" not in done.stdout
    assert not (out / "model.pt").exists()
    assert re.search(r"no such data set", errors[0])
