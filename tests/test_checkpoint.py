"""Tests for lsakit.checkpoint: safetensors checkpoints, atomic writes and loud failures."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lsakit import models
from lsakit.checkpoint import (
    FORMAT_VERSION,
    METADATA_KEY,
    RESERVED_FIELDS,
    CheckpointMeta,
    describe_mismatch,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from lsakit.errors import CheckpointError, ConfigError, InputError

SMALL_A = {"hidden": 8}
SMALL_WRN = {"depth": 10, "widen_factor": 1}


def _model_a(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build("model_a", **SMALL_A)


def _save_a(path: Path, seed: int = 0, **extra: Any) -> Path:
    return save_checkpoint(
        path, _model_a(seed), model_name="model_a", model_kwargs=SMALL_A, extra=extra or None
    )


def _write_raw(path: Path, tensors: dict[str, torch.Tensor], meta: Any) -> Path:
    """A safetensors file with arbitrary lsakit metadata (None: no metadata at all)."""
    metadata = (
        None
        if meta is None
        else {METADATA_KEY: meta if isinstance(meta, str) else json.dumps(meta)}
    )
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    return path


def _valid_meta(**overrides: Any) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "model": "model_a",
        "model_kwargs": models.resolve_kwargs("model_a", SMALL_A),
        **overrides,
    }


def _message(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, "error messages are one line"
    return message


# ---------------------------------------------------------------------------------- round trip


def test_round_trip_model_a(tmp_path: Path) -> None:
    model = _model_a()
    path = save_checkpoint(
        tmp_path / "a.safetensors",
        model,
        model_name="model_a",
        model_kwargs=SMALL_A,
        extra={"dataset": "moons", "epoch": 7, "metrics": {"clean": 0.97, "fgsm": [0.9, 0.8]}},
    )
    assert path == tmp_path / "a.safetensors"
    loaded, meta = load_checkpoint(path)
    assert meta == CheckpointMeta(
        format_version=1,
        model="model_a",
        model_kwargs={"in_features": 2, "hidden": 8, "num_classes": 2, "outputs": None},
        extra={"dataset": "moons", "epoch": 7, "metrics": {"clean": 0.97, "fgsm": [0.9, 0.8]}},
    )
    assert read_meta(path) == meta
    x = torch.rand(5, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_round_trip_wrn_keeps_batchnorm_state_and_normalize(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = models.build("wrn", **SMALL_WRN)
    model(torch.rand(4, 3, 32, 32))  # a training-mode step moves the BatchNorm statistics
    path = save_checkpoint(
        tmp_path / "w.safetensors", model, model_name="wrn", model_kwargs=SMALL_WRN
    )
    loaded, _ = load_checkpoint(path, map_location=torch.device("cpu"))
    original, restored = model.state_dict(), loaded.state_dict()
    assert list(restored) == list(original)
    for key, tensor in original.items():
        assert restored[key].dtype == tensor.dtype, key
        assert torch.equal(restored[key], tensor), key
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_loaded_model_is_in_eval_mode(tmp_path: Path) -> None:
    loaded, _ = load_checkpoint(_save_a(tmp_path / "a.safetensors"))
    assert not any(m.training for m in loaded.modules())


def test_file_layout_is_plain_safetensors_with_json_metadata(tmp_path: Path) -> None:
    path = _save_a(tmp_path / "a.safetensors", epoch=3)
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    assert set(metadata) == {METADATA_KEY}
    assert json.loads(metadata[METADATA_KEY]) == {
        "format_version": 1,
        "model": "model_a",
        "model_kwargs": {"in_features": 2, "hidden": 8, "num_classes": 2, "outputs": None},
        "epoch": 3,
    }
    assert keys == set(_model_a().state_dict())


def test_model_kwargs_are_stored_complete(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "b.safetensors", models.build("model_b"), model_name="model_b", model_kwargs={}
    )
    assert read_meta(path).model_kwargs == {"in_channels": 1, "num_classes": 10, "normalize": False}


_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False)  # NaN round-trips but is never equal to itself
    | st.text(max_size=8)
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


_TINY_MODEL = models.build("model_a", hidden=2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extra=st.dictionaries(
        st.text(max_size=10).filter(lambda k: k not in RESERVED_FIELDS), _JSON_VALUES, max_size=4
    )
)
def test_extra_metadata_round_trips(extra: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = save_checkpoint(
            Path(directory) / "m.safetensors",
            _TINY_MODEL,
            model_name="model_a",
            model_kwargs={"hidden": 2},
            extra=extra,
        )
        assert read_meta(path).extra == extra


def test_tied_and_non_contiguous_tensors_are_saved(tmp_path: Path) -> None:
    # safetensors refuses tensors sharing storage; the checkpoint clones them.
    kwargs = {"in_features": 4, "hidden": 4, "num_classes": 4}
    model = models.build("model_a", **kwargs)
    tied = model.get_parameter("fc1.weight")
    model.get_submodule("fc3").weight = tied  # two state-dict keys, one storage
    non_contiguous = nn.Parameter(torch.rand(4, 4).t())
    model.get_submodule("fc2").weight = non_contiguous
    path = save_checkpoint(
        tmp_path / "t.safetensors", model, model_name="model_a", model_kwargs=kwargs
    )
    loaded, _ = load_checkpoint(path)
    assert torch.equal(loaded.get_parameter("fc3.weight"), tied)
    assert torch.equal(loaded.get_parameter("fc2.weight"), non_contiguous)
    assert model.get_parameter("fc3.weight") is tied  # the caller's model is untouched


# ----------------------------------------------------------------------------------- atomicity


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_overwrite_goes_through_a_temp_file_in_the_same_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _save_a(tmp_path / "ck.safetensors", seed=0)
    written: list[Path] = []
    real_save_file = safetensors.torch.save_file

    def spy(tensors: Any, filename: Any, metadata: Any = None) -> None:
        written.append(Path(filename))
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", spy)
    _save_a(target, seed=1)
    assert len(written) == 1
    assert written[0].parent == tmp_path
    assert re.fullmatch(r"\.ck\.safetensors\.tmp-\w+", written[0].name)
    assert _entries(tmp_path) == ["ck.safetensors"]
    loaded, _ = load_checkpoint(target)
    assert torch.equal(
        loaded.get_parameter("fc1.weight"), _model_a(seed=1).get_parameter("fc1.weight")
    )


def test_file_and_directory_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(
            os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "?"
        )
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    _save_a(tmp_path / "ck.safetensors")
    assert len(synced) == 2
    if synced[0] != "?":
        assert re.fullmatch(rf"{re.escape(str(tmp_path))}/\.ck\.safetensors\.tmp-.*", synced[0])
        assert synced[1] == str(tmp_path)


def test_failure_mid_write_leaves_old_checkpoint_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _save_a(tmp_path / "ck.safetensors", seed=0)
    before = target.read_bytes()

    def disk_full_halfway(tensors: Any, filename: Any, metadata: Any = None) -> None:
        payload = safetensors.torch.save(tensors, metadata=metadata)
        Path(filename).write_bytes(payload[: len(payload) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full_halfway)
    with pytest.raises(CheckpointError) as caught:
        _save_a(target, seed=1)
    message = _message(caught)
    assert str(target) in message
    assert "No space left on device" in message
    assert target.read_bytes() == before
    assert _entries(tmp_path) == ["ck.safetensors"]


@pytest.mark.parametrize(
    ("stage", "error", "expected"),
    [
        ("fsync", KeyboardInterrupt(), KeyboardInterrupt),
        ("fsync", OSError(errno.EIO, "I/O error"), CheckpointError),
        ("replace", OSError(errno.EXDEV, "cross-device link"), CheckpointError),
        ("serialize", RuntimeError("a bug"), RuntimeError),
    ],
)
def test_any_error_removes_the_temp_file_and_keeps_old_checkpoint(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    error: BaseException,
    expected: type[BaseException],
) -> None:
    target = _save_a(tmp_path / "ck.safetensors", seed=0)
    before = target.read_bytes()

    def fail(*args: Any, **kwargs: Any) -> None:
        raise error

    patched = {
        "fsync": (os, "fsync"),
        "replace": (os, "replace"),
        "serialize": (safetensors.torch, "save_file"),
    }
    monkeypatch.setattr(*patched[stage], fail)
    with pytest.raises(expected):
        _save_a(target, seed=1)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert _entries(tmp_path) == ["ck.safetensors"]


def test_parent_directories_are_created(tmp_path: Path) -> None:
    path = _save_a(tmp_path / "runs" / "moons" / "best.safetensors")
    assert read_meta(path).model == "model_a"


def test_saving_onto_a_directory_fails(tmp_path: Path) -> None:
    (tmp_path / "ck.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a directory") as caught:
        _save_a(tmp_path / "ck.safetensors")
    _message(caught)


# ------------------------------------------------------------------------------- save refusals


def test_save_refuses_unknown_model_name_and_kwarg(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'model_a'"):
        save_checkpoint(
            tmp_path / "x.safetensors", _model_a(), model_name="model_A", model_kwargs={}
        )
    with pytest.raises(ConfigError, match="'width'"):
        save_checkpoint(
            tmp_path / "x.safetensors", _model_a(), model_name="model_a", model_kwargs={"width": 8}
        )
    assert _entries(tmp_path) == []


def test_save_refuses_weights_that_do_not_fit_the_recipe(tmp_path: Path) -> None:
    # hidden=8 model declared with the default hidden=100: load would fail, so save refuses.
    with pytest.raises(ConfigError, match=r"'fc1\.weight' has shape \(8, 2\)") as caught:
        save_checkpoint(
            tmp_path / "x.safetensors", _model_a(), model_name="model_a", model_kwargs={}
        )
    _message(caught)
    wrapped = nn.DataParallel(_model_a())  # keys gain a "module." prefix
    with pytest.raises(ConfigError, match="unexpected keys 'module"):
        save_checkpoint(
            tmp_path / "x.safetensors", wrapped, model_name="model_a", model_kwargs=SMALL_A
        )
    assert _entries(tmp_path) == []


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"model": "other"}, "may not set"),
        ({"format_version": 2}, "may not set"),
        ({"weights": torch.zeros(2)}, "not JSON-serializable"),
        ({"when": object()}, "not JSON-serializable"),
        ({1: "a"}, "non-string keys"),
    ],
)
def test_save_refuses_bad_extra(tmp_path: Path, extra: dict[Any, Any], match: str) -> None:
    with pytest.raises(InputError, match=match):
        save_checkpoint(
            tmp_path / "x.safetensors",
            _model_a(),
            model_name="model_a",
            model_kwargs=SMALL_A,
            extra=extra,
        )
    assert _entries(tmp_path) == []


# ----------------------------------------------------------------------------- load refusals


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    for reader in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError, match="does not exist") as caught:
            reader(path)
        assert str(path) in _message(caught)
        assert "lsakit train" in _message(caught)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0, 5, 8, 40, -1])
def test_truncated_file(tmp_path: Path, keep: int) -> None:
    data = _save_a(tmp_path / "full.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:keep])
    for reader in (load_checkpoint, read_meta):
        with pytest.raises(CheckpointError, match="not a valid safetensors file") as caught:
            reader(path)
        assert str(path) in _message(caught)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match="not a valid safetensors file") as caught:
        load_checkpoint(path)
    assert str(path) in _message(caught)


class _CreatesFileWhenUnpickled:
    """A pickle payload that runs code: unpickling it calls ``open(path, "w")``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_pickle_payload_is_refused_without_running_it(tmp_path: Path) -> None:
    # The payload is live: unpickling it really creates a file.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_CreatesFileWhenUnpickled(probe))).close()
    assert probe.exists()

    sentinel = tmp_path / "pwned"
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(pickle.dumps({"state": _CreatesFileWhenUnpickled(sentinel)}))
    zipped = tmp_path / "zipped.safetensors"
    torch.save({"state": _CreatesFileWhenUnpickled(sentinel)}, zipped)
    for path in (plain, zipped):
        with pytest.raises(CheckpointError, match="not a valid safetensors file") as caught:
            load_checkpoint(path)
        assert str(path) in _message(caught)
    assert not sentinel.exists()


def test_safetensors_file_without_lsakit_metadata(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "foreign.safetensors", _model_a().state_dict(), None)
    with pytest.raises(CheckpointError, match="no lsakit metadata") as caught:
        load_checkpoint(path)
    assert str(path) in _message(caught)


def test_unsupported_format_version(tmp_path: Path) -> None:
    path = _write_raw(
        tmp_path / "v2.safetensors", _model_a().state_dict(), _valid_meta(format_version=2)
    )
    with pytest.raises(CheckpointError, match="format_version 2") as caught:
        read_meta(path)
    assert str(path) in _message(caught)


@pytest.mark.parametrize(
    "meta",
    [
        "{not json",
        ["a", "list"],
        {"model": "model_a", "model_kwargs": {}},
        _valid_meta(format_version="1"),
        _valid_meta(model=None),
        _valid_meta(model_kwargs=[8]),
    ],
)
def test_corrupt_metadata(tmp_path: Path, meta: Any) -> None:
    path = _write_raw(tmp_path / "bad.safetensors", _model_a().state_dict(), meta)
    with pytest.raises(CheckpointError, match="corrupt lsakit metadata") as caught:
        load_checkpoint(path)
    assert str(path) in _message(caught)


def test_unknown_model_name_in_metadata(tmp_path: Path) -> None:
    path = _write_raw(
        tmp_path / "u.safetensors", _model_a().state_dict(), _valid_meta(model="resnet50")
    )
    assert read_meta(path).model == "resnet50"  # the metadata itself is readable
    with pytest.raises(CheckpointError, match="'resnet50'") as caught:
        load_checkpoint(path)
    assert str(path) in _message(caught)


def test_unknown_model_kwarg_in_metadata(tmp_path: Path) -> None:
    path = _write_raw(
        tmp_path / "k.safetensors", _model_a().state_dict(), _valid_meta(model_kwargs={"width": 8})
    )
    with pytest.raises(CheckpointError, match="'width'") as caught:
        load_checkpoint(path)
    assert str(path) in _message(caught)


def test_shape_mismatch_names_the_key(tmp_path: Path) -> None:
    state = _model_a().state_dict()
    state["fc4.weight"] = torch.zeros(3, 8)
    path = _write_raw(tmp_path / "s.safetensors", state, _valid_meta())
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = _message(caught)
    assert "'fc4.weight' has shape (3, 8) where the model expects (2, 8)" in message
    assert str(path) in message


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = _model_a().state_dict()
    state["extra.weight"] = state.pop("fc2.bias")
    path = _write_raw(tmp_path / "m.safetensors", state, _valid_meta())
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = _message(caught)
    assert "missing key 'fc2.bias'" in message
    assert "unexpected key 'extra.weight'" in message


def test_bad_map_location(tmp_path: Path) -> None:
    path = _save_a(tmp_path / "a.safetensors")
    with pytest.raises(InputError, match="is not a device"):
        load_checkpoint(path, map_location="gpu-please")
    absent = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, or any GPU on CPU hosts
    with pytest.raises(InputError, match="not available here") as caught:
        load_checkpoint(path, map_location=absent)
    _message(caught)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to move weights")
def test_cuda_model_saves_and_loads_onto_the_requested_device(tmp_path: Path) -> None:
    model = _model_a().cuda()
    path = save_checkpoint(
        tmp_path / "g.safetensors", model, model_name="model_a", model_kwargs=SMALL_A
    )
    on_cpu, _ = load_checkpoint(path)
    on_gpu, _ = load_checkpoint(path, map_location="cuda")
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"}
    assert {p.device.type for p in on_gpu.parameters()} == {"cuda"}
    x = torch.rand(3, 2, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(on_gpu(x), model.eval()(x))
        torch.testing.assert_close(on_cpu(x.cpu()), model(x).cpu())


def test_describe_mismatch_summarizes() -> None:
    expected = {f"k{i}": (1,) for i in range(6)}
    assert describe_mismatch(expected=expected, found=expected) is None
    found = {"k0": (2,), "k1": (3,)}
    assert describe_mismatch(expected=expected, found=found) == (
        "missing keys 'k2', 'k3', 'k4' (and 1 more), key 'k0' has shape (2,) where the model "
        "expects (1,) (and 1 more keys with other shapes)"
    )
