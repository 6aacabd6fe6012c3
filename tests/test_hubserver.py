"""The local hub of ``hubserver`` against the real clients: huggingface_hub, timm, transformers
and torch.hub. Each client runs in a subprocess, because huggingface_hub reads ``HF_ENDPOINT``,
``HF_HOME`` and ``HF_HUB_OFFLINE`` when it is imported; the subprocess sees no other network
(proxy variables removed) and prints its findings as JSON on its last line."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hubserver import (
    FileServer,
    HubServer,
    dataset_card,
    git_blob_sha1,
    run_client,
    sha256_hex,
    torch_hub_filename,
)

# No proxy, whatever the environment says: the servers are on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain urllib request: (status, headers, body), errors included."""
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server


DEMO_FILES: dict[str, bytes] = {
    "config.json": b'{"hidden": 4}\n',
    "README.md": b"# demo\n",
    "weights/model.safetensors": bytes(range(256)) * 40,
}


# ------------------------------------------------------------------------------------------
# The protocol, with plain HTTP
# ------------------------------------------------------------------------------------------


def test_resolve_answers_headers_and_ranges(hub: HubServer) -> None:
    sha = hub.add_repo("org/demo", DEMO_FILES)
    assert len(sha) == 40 and sha == hub.add_repo("org/demo", DEMO_FILES)  # deterministic
    base = f"{hub.endpoint}/org/demo/resolve"

    status, headers, body = http(f"{base}/main/config.json", "HEAD")
    assert (status, body) == (200, b"")
    assert headers["X-Repo-Commit"] == sha
    assert headers["ETag"] == f'"{git_blob_sha1(DEMO_FILES["config.json"])}"'  # a git blob id
    assert headers["Content-Length"] == str(len(DEMO_FILES["config.json"]))

    weights = DEMO_FILES["weights/model.safetensors"]
    status, headers, body = http(f"{base}/{sha}/weights/model.safetensors")
    assert (status, body) == (200, weights)
    assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{sha256_hex(weights)}"'  # LFS
    assert headers["X-Linked-Size"] == str(len(weights))

    for asked, start, end in (("bytes=10-19", 10, 20), ("bytes=10000-", 10000, len(weights))):
        status, headers, body = http(
            f"{base}/main/weights/model.safetensors", headers={"Range": asked}
        )
        assert (status, body) == (206, weights[start:end])
        assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(weights)}"
    status, _, body = http(f"{base}/main/weights/model.safetensors", headers={"Range": "bytes=-5"})
    assert (status, body) == (206, weights[-5:])
    status, headers, _ = http(f"{base}/main/config.json", headers={"Range": "bytes=999-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(DEMO_FILES['config.json'])}"


def test_errors_carry_hub_error_codes(hub: HubServer) -> None:
    sha = hub.add_repo("org/demo", DEMO_FILES)
    for path, code in (
        ("/org/nope/resolve/main/config.json", "RepoNotFound"),
        ("/org/demo/resolve/nope/config.json", "RevisionNotFound"),
        ("/org/demo/resolve/main/missing.txt", "EntryNotFound"),
        ("/api/models/org/nope/revision/main", "RepoNotFound"),
        ("/api/models/org/demo/tree/main/nope", "EntryNotFound"),
    ):
        status, headers, body = http(hub.endpoint + path)
        assert (status, headers.get("X-Error-Code")) == (404, code), path
        assert "error" in json.loads(body)
    _, headers, _ = http(f"{hub.endpoint}/org/demo/resolve/main/missing.txt", "HEAD")
    assert headers["X-Repo-Commit"] == sha  # lets the client record the miss in .no_exist/

    status, headers, body = http(f"{hub.endpoint}/api/agent-harnesses")
    assert status == 404 and "X-Error-Code" not in headers and json.loads(body)["error"]
    assert hub.unhandled == ["GET /api/agent-harnesses"]


def test_revisions_branches_and_commits(hub: HubServer) -> None:
    old = hub.add_repo("org/demo", {"a.txt": b"old"})
    new = hub.add_repo("org/demo", {"a.txt": b"new"})
    tag = hub.add_repo("org/demo", {"a.txt": b"tagged"}, revision="refs/pr/1")
    assert len({old, new, tag}) == 3
    assert hub.resolve("org/demo") == new
    for revision, content in (
        ("main", b"new"),
        (old, b"old"),
        (new, b"new"),
        ("refs%2Fpr%2F1", b"tagged"),
    ):
        status, headers, body = http(f"{hub.endpoint}/org/demo/resolve/{revision}/a.txt")
        assert (status, body) == (200, content), revision
        assert headers["X-Repo-Commit"] in (old, new, tag)
    hub.set_ref("org/demo", "v1", old)
    _, _, body = http(f"{hub.endpoint}/api/models/org/demo/revision/v1")
    assert json.loads(body)["sha"] == old
    _, _, body = http(f"{hub.endpoint}/api/models/org/demo")
    info = json.loads(body)
    assert (info["id"], info["sha"], info["siblings"]) == (
        "org/demo",
        new,
        [{"rfilename": "a.txt"}],
    )


def test_tree_lists_files_and_folders(hub: HubServer) -> None:
    files = {**DEMO_FILES, "weights/deep/x.bin": b"x"}
    sha = hub.add_repo("org/demo", files)
    _, _, body = http(f"{hub.endpoint}/api/models/org/demo/tree/main?recursive=false&expand=false")
    top = json.loads(body)
    assert [(e["type"], e["path"]) for e in top] == [
        ("directory", "weights"),
        ("file", "README.md"),
        ("file", "config.json"),
    ]
    _, _, body = http(f"{hub.endpoint}/api/models/org/demo/tree/{sha}?recursive=true")
    every = {e["path"]: e for e in json.loads(body)}
    assert set(every) == {*files, "weights", "weights/deep"}
    safetensors = every["weights/model.safetensors"]
    assert safetensors["size"] == len(files["weights/model.safetensors"])
    assert safetensors["lfs"]["oid"] == sha256_hex(files["weights/model.safetensors"])
    assert every["config.json"]["oid"] == git_blob_sha1(files["config.json"])
    assert "lfs" not in every["config.json"]
    # The sub-folder arrives percent-encoded as one segment ("weights%2Fdeep").
    _, _, body = http(f"{hub.endpoint}/api/models/org/demo/tree/main/weights%2Fdeep?expand=true")
    (entry,) = json.loads(body)
    assert entry["path"] == "weights/deep/x.bin" and entry["lastCommit"]["id"] == sha
    status, _, body = http(
        f"{hub.endpoint}/api/models/org/demo/paths-info/main",
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"paths=config.json&paths=nope&paths=weights&expand=false",
    )
    assert status == 200
    assert [(e["type"], e["path"]) for e in json.loads(body)] == [
        ("file", "config.json"),
        ("directory", "weights"),
    ]


def test_folder_repos_datasets_and_stop(hub: HubServer, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").write_bytes(b"PAR1")
    (tmp_path / "README.md").write_bytes(b"---\n---\n")
    hub.add_folder("org/set", tmp_path, kind="dataset")
    status, _, body = http(f"{hub.endpoint}/datasets/org/set/resolve/main/data/train.parquet")
    assert (status, body) == (200, b"PAR1")
    status, _, _ = http(f"{hub.endpoint}/org/set/resolve/main/README.md")  # not a model
    assert status == 404
    _, _, body = http(f"{hub.endpoint}/api/datasets/org/set/revision/main")
    assert {s["rfilename"] for s in json.loads(body)["siblings"]} == {
        "README.md",
        "data/train.parquet",
    }
    assert hub.count("/datasets/org/set/resolve/") == 1 and hub.count(method="HEAD") == 0
    hub.stop()
    with pytest.raises(urllib.error.URLError):
        _OPENER.open(f"{hub.endpoint}/api/datasets/org/set", timeout=5)


def test_file_server_serves_paths() -> None:
    data = b"weights" * 100
    name = torch_hub_filename("net", data)
    assert name == f"net-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    with FileServer() as files:
        url = files.add(f"/models/{name}", data)
        assert url == f"{files.endpoint}/models/{name}"
        assert http(url)[::2] == (200, data)
        assert http(url, headers={"Range": "bytes=0-6"})[::2] == (206, b"weights")
        assert http(files.url("/nope"))[0] == 404
        assert files.requests == [
            f"GET /models/{name}",
            f"GET /models/{name} (Range: bytes=0-6)",
            "GET /nope",
        ]


# ------------------------------------------------------------------------------------------
# huggingface_hub
# ------------------------------------------------------------------------------------------

HF_DOWNLOAD = """
from pathlib import Path
from huggingface_hub import hf_hub_download, snapshot_download
import hashlib
path = Path(hf_hub_download("org/demo", "weights/model.safetensors", revision=REVISION))
result["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
result["snapshot_commit"] = path.parent.parent.name
result["file"] = str(path)
folder = Path(snapshot_download("org/demo", revision=REVISION))
result["snapshot"] = {
    p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
    for p in folder.rglob("*") if p.is_file()
}
result["snapshot_dir"] = str(folder)
"""


def hf_download(
    home: Path, endpoint: str, revision: str, *, offline: bool = False
) -> dict[str, Any]:
    return run_client(f"REVISION = {revision!r}\n" + HF_DOWNLOAD, home, endpoint, offline=offline)


def test_huggingface_hub_downloads_and_resolves_revisions(hub: HubServer, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    old = hub.add_repo("org/demo", {**DEMO_FILES, "weights/model.safetensors": b"old weights"})
    sha = hub.add_repo("org/demo", DEMO_FILES)
    expected = {path: sha256_hex(data) for path, data in DEMO_FILES.items()}

    found = hf_download(tmp_path, hub.endpoint, "main")
    assert found["file_sha256"] == expected["weights/model.safetensors"]
    assert (found["snapshot_commit"], found["snapshot"]) == (sha, expected)
    refs = tmp_path / "hf" / "hub" / "models--org--demo" / "refs" / "main"
    assert refs.read_text() == sha
    assert hub.unhandled == []

    hub.clear_requests()  # by commit sha: all cached, and an old commit is still reachable
    assert hf_download(tmp_path, hub.endpoint, sha)["snapshot"] == expected
    assert hub.requests == []  # a commit sha with everything cached: not even a HEAD
    found = hf_download(tmp_path, hub.endpoint, old)
    assert found["snapshot_commit"] == old
    assert found["file_sha256"] == sha256_hex(b"old weights")


def test_huggingface_hub_resumes_a_dropped_download_with_a_range(
    hub: HubServer, tmp_path: Path
) -> None:
    pytest.importorskip("huggingface_hub")
    # huggingface_hub reads the body in 10 MiB chunks and resumes from the last whole chunk, so
    # the file must outgrow one chunk and the connection drop after it.
    big = bytes(range(256)) * (12 * 4096)  # 12 MiB
    hub.add_repo("org/big", {"model.safetensors": big})
    hub.interrupt_next("model.safetensors", after_bytes=11 * 2**20)
    found = run_client(
        """
        import hashlib
        from pathlib import Path
        from huggingface_hub import hf_hub_download
        path = Path(hf_hub_download("org/big", "model.safetensors"))
        result["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        """,
        tmp_path,
        hub.endpoint,
    )
    assert found["sha256"] == sha256_hex(big)
    assert [line for line in hub.requests if line.startswith("GET ")] == [
        "GET /org/big/resolve/main/model.safetensors",
        f"GET /org/big/resolve/main/model.safetensors (Range: bytes={10 * 2**20}-)",
    ]


def test_huggingface_hub_raises_its_own_errors(hub: HubServer, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    hub.add_repo("org/demo", DEMO_FILES)
    found = run_client(
        """
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import (
            EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
        )
        cases = {
            "repo": (RepositoryNotFoundError, lambda: hf_hub_download("org/nope", "config.json")),
            "revision": (
                RevisionNotFoundError,
                lambda: hf_hub_download("org/demo", "config.json", revision="nope"),
            ),
            "file": (EntryNotFoundError, lambda: hf_hub_download("org/demo", "missing.txt")),
            "snapshot_repo": (RepositoryNotFoundError, lambda: snapshot_download("org/nope")),
            "snapshot_revision": (
                RevisionNotFoundError, lambda: snapshot_download("org/demo", revision="nope"),
            ),
        }
        for name, (expected, call) in cases.items():
            try:
                call()
                result[name] = "no error"
            except expected as error:
                result[name] = type(error).__name__
        """,
        tmp_path,
        hub.endpoint,
    )
    assert found | {"seconds": 0} == {
        "repo": "RepositoryNotFoundError",
        "revision": "RevisionNotFoundError",
        "file": "RemoteEntryNotFoundError",  # 2.4: a subclass of EntryNotFoundError
        "snapshot_repo": "RepositoryNotFoundError",
        "snapshot_revision": "RevisionNotFoundError",
        "seconds": 0,
    }
    commit = hub.resolve("org/demo")
    assert (tmp_path / f"hf/hub/models--org--demo/.no_exist/{commit}/missing.txt").exists()


def test_huggingface_hub_offline_uses_the_cache(hub: HubServer, tmp_path: Path) -> None:
    pytest.importorskip("huggingface_hub")
    sha = hub.add_repo("org/demo", DEMO_FILES)
    online = hf_download(tmp_path, hub.endpoint, "main")

    hub.clear_requests()
    offline = hf_download(tmp_path, hub.endpoint, "main", offline=True)
    assert hub.requests == []  # HF_HUB_OFFLINE=1: not one request, server up or not
    assert offline["file"] == online["file"] and offline["snapshot"] == online["snapshot"]

    hub.stop()
    for revision in ("main", sha):
        again = hf_download(tmp_path, hub.endpoint, revision, offline=True)
        assert again["snapshot"] == online["snapshot"] and again["snapshot_commit"] == sha
    # Without HF_HUB_OFFLINE, a dead endpoint (connection refused) falls back to the cache too
    # (run_client's time-out bounds the wait; no wall-clock assert).
    again = hf_download(tmp_path, hub.endpoint, "main")
    assert again["snapshot"] == online["snapshot"] and again["snapshot_commit"] == sha


def test_huggingface_hub_offline_with_an_empty_cache_fails_without_a_request(
    hub: HubServer, tmp_path: Path
) -> None:
    pytest.importorskip("huggingface_hub")
    hub.add_repo("org/demo", DEMO_FILES)
    hub.clear_requests()
    found = run_client(
        """
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
        for name, call in (
            ("file", lambda: hf_hub_download("org/demo", "config.json")),
            ("snapshot", lambda: snapshot_download("org/demo")),
        ):
            try:
                call()
                result[name] = "no error"
            except LocalEntryNotFoundError as error:
                result[name] = type(error).__name__
        """,
        tmp_path,
        hub.endpoint,
        offline=True,
    )
    assert (found["file"], found["snapshot"]) == ("LocalEntryNotFoundError",) * 2
    # fast, whatever the machine: the hub is up and not one request reached it (nothing tried,
    # nothing retried) — the error comes from the empty cache alone
    assert hub.requests == []


# ------------------------------------------------------------------------------------------
# timm
# ------------------------------------------------------------------------------------------

TIMM_CFG = {
    "mean": [0.25, 0.5, 0.75],
    "std": [0.5, 0.25, 0.125],
    "input_size": [3, 64, 64],
    "crop_pct": 0.9,
    "interpolation": "bilinear",
}

TIMM_CLIENT = """
import torch, timm
from safetensors.torch import load_file
torch.set_num_threads(1)
model = timm.create_model("hf-hub:timm/resnet18.test", pretrained=True)
served = load_file(REFERENCE)
state = model.state_dict()
result["same_keys"] = sorted(served) == sorted(state)
result["equal"] = all(torch.equal(state[k], v) for k, v in served.items())
config = timm.data.resolve_model_data_config(model)
result["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
result["num_classes"] = model.num_classes
"""


@pytest.mark.slow
def test_timm_loads_a_served_hf_hub_model(hub: HubServer, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model = timm.create_model("resnet18", num_classes=3)
    reference = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(reference))
    config = {"architecture": "resnet18", "num_classes": 3, "pretrained_cfg": TIMM_CFG}
    hub.add_repo(
        "timm/resnet18.test",
        {"config.json": json.dumps(config).encode(), "model.safetensors": reference},
    )
    code = f"REFERENCE = {str(reference)!r}\n" + TIMM_CLIENT

    found = run_client(code, tmp_path, hub.endpoint)
    assert found["same_keys"] and found["equal"] and found["num_classes"] == 3
    for key, value in TIMM_CFG.items():
        assert found["config"][key] == value, key
    assert hub.unhandled == []
    online_requests = hub.requests

    hub.stop()
    again = run_client(code, tmp_path, hub.endpoint, offline=True)
    assert again | {"seconds": 0} == found | {"seconds": 0}
    print(
        f"timm: online {found['seconds']:.1f} s, offline {again['seconds']:.1f} s", online_requests
    )


# ------------------------------------------------------------------------------------------
# transformers
# ------------------------------------------------------------------------------------------

TRANSFORMERS_CLIENT = """
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForImageClassification
torch.set_num_threads(1)
model = AutoModelForImageClassification.from_pretrained(
    "org/tiny-vit", revision="main", trust_remote_code=False
)
served = load_file(REFERENCE)
state = model.state_dict()
result["keys_differ"] = sorted(set(served) ^ set(state))
result["equal"] = all(torch.equal(state[k], v) for k, v in served.items() if k in state)
result["labels"] = {str(k): v for k, v in model.config.id2label.items()}
processor = AutoImageProcessor.from_pretrained("org/tiny-vit")
result["size"] = dict(processor.size)
result["mean"] = list(processor.image_mean)
pixels = processor(images=torch.rand(3, 8, 8), return_tensors="pt", do_rescale=False)["pixel_values"]
result["logits_shape"] = list(model(pixel_values=pixels).logits.shape)
"""


@pytest.mark.slow
def test_transformers_loads_a_served_model_and_processor(hub: HubServer, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    config = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        id2label={0: "cat", 1: "dog"},
        label2id={"cat": 0, "dog": 1},
    )
    folder = tmp_path / "repo"
    model = transformers.ViTForImageClassification(config)
    model.save_pretrained(folder, safe_serialization=True)
    transformers.ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(folder)
    hub.add_folder("org/tiny-vit", folder)
    # The model's own names: transformers 5 may rename checkpoint keys when it loads them.
    reference = tmp_path / "reference.safetensors"
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    safetensors_torch.save_file(state, str(reference))
    code = f"REFERENCE = {str(reference)!r}\n" + TRANSFORMERS_CLIENT

    found = run_client(code, tmp_path, hub.endpoint)
    assert found["keys_differ"] == [] and found["equal"]
    assert found["labels"] == {"0": "cat", "1": "dog"}
    assert found["size"] == {"height": 8, "width": 8} and found["mean"] == [0.5, 0.5, 0.5]
    assert found["logits_shape"] == [1, 2]
    assert hub.count("/resolve/") > 0 and hub.unhandled == []
    online_requests = hub.requests

    hub.stop()
    again = run_client(code, tmp_path, hub.endpoint, offline=True)
    assert again | {"seconds": 0} == found | {"seconds": 0}
    print(f"transformers: online {found['seconds']:.1f} s, offline {again['seconds']:.1f} s")
    print("\n".join(online_requests))


# ------------------------------------------------------------------------------------------
# torch.hub (torchvision's weights)
# ------------------------------------------------------------------------------------------

TORCH_HUB_CLIENT = """
import os, torch
from torch.hub import load_state_dict_from_url
torch.set_num_threads(1)
checkpoints = os.path.join(os.environ["TORCH_HOME"], "hub", "checkpoints")
state = load_state_dict_from_url(URL, model_dir=checkpoints, check_hash=True, weights_only=True)
reference = torch.load(REFERENCE, weights_only=True)
result["equal"] = sorted(state) == sorted(reference) and all(
    torch.equal(state[k], v) for k, v in reference.items()
)
if BAD_URL:
    try:
        load_state_dict_from_url(BAD_URL, model_dir=checkpoints, check_hash=True, weights_only=True)
        result["bad"] = "no error"
    except RuntimeError as error:
        result["bad"] = str(error)
result["cached"] = sorted(os.listdir(checkpoints))
"""


@pytest.mark.slow
def test_torch_hub_downloads_checks_the_hash_and_caches(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    reference = tmp_path / "reference.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), reference)
    name = torch_hub_filename("resnet18", reference)
    with FileServer() as files:
        url = files.add(f"/models/{name}", reference)
        bad_url = files.add("/models/resnet18-deadbeef.pth", reference)

        def client(url: str, bad_url: str, offline: bool = False) -> dict[str, Any]:
            code = f"URL, BAD_URL, REFERENCE = {url!r}, {bad_url!r}, {str(reference)!r}\n"
            return run_client(code + TORCH_HUB_CLIENT, tmp_path, files.endpoint, offline=offline)

        found = client(url, bad_url)
        assert found["equal"] and "invalid hash value" in found["bad"]
        assert found["cached"] == [name]  # nothing left behind by the bad download
        assert files.count(name) == 1 and files.count("deadbeef") == 1
    again = client(url, "", offline=True)  # server stopped: from the cache, unchecked
    assert again["equal"] and again["cached"] == [name]
    print(f"torch.hub: online {found['seconds']:.1f} s, cached {again['seconds']:.1f} s")


# ------------------------------------------------------------------------------------------
# datasets (optional: not installed in every venv)
# ------------------------------------------------------------------------------------------


DATASETS_CLIENT = """
from datasets import load_dataset
data = load_dataset("org/tiny-images", split="train")
result["rows"] = len(data)
result["labels"] = list(data["label"])
result["names"] = data.features["label"].names
result["image_size"] = list(data[0]["image"].size)
"""


@pytest.mark.slow
def test_datasets_loads_a_served_parquet_repo(hub: HubServer, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="datasets is not installed in this venv")
    image = pytest.importorskip("PIL.Image")
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])}
    )
    pictures = []
    for shade in range(4):
        png = io.BytesIO()
        image.new("RGB", (8, 6), (60 * shade, 0, 0)).save(png, format="PNG")
        pictures.append({"bytes": png.getvalue(), "path": None})
    table = datasets.Dataset.from_dict(
        {"image": pictures, "label": [0, 1, 1, 0]}, features=features
    )
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    table.to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    (repo / "README.md").write_text(dataset_card(["train"], ["cat", "dog"]))
    hub.add_folder("org/tiny-images", repo, kind="dataset")

    found = run_client(DATASETS_CLIENT, tmp_path, hub.endpoint)
    expected = {"rows": 4, "labels": [0, 1, 1, 0], "names": ["cat", "dog"], "image_size": [8, 6]}
    assert found | {"seconds": 0} == expected | {"seconds": 0}
    assert hub.unhandled == [] and hub.count("/api/datasets/org/tiny-images/tree/") > 0
    online_requests = hub.requests

    hub.stop()
    again = run_client(DATASETS_CLIENT, tmp_path, hub.endpoint, offline=True)
    assert again | {"seconds": 0} == expected | {"seconds": 0}
    print(f"datasets: online {found['seconds']:.1f} s, offline {again['seconds']:.1f} s")
    print("\n".join(online_requests))
