"""Data of the user's through the registry: image folders and tensor files (lsakit.data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from lsakit import data
from lsakit.config import preset
from lsakit.data import folder
from lsakit.domain import UNBOUNDED, UNIT, as_domain
from lsakit.errors import ConfigError, DataError, LsakitError


def make_folder(root: Path, classes: dict[str, int], side: int = 16, seed: int = 0) -> Path:
    """``classes`` name → image count, random RGB PNGs of ``side``×``side``."""
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


def pil_pixels(path: Path, mode: str = "RGB", size: tuple[int, int] | None = None) -> torch.Tensor:
    with Image.open(path) as image:
        converted = image.convert(mode)
        if size is not None:
            converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(converted, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy()).float() / 255


class Evil:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""


# ------------------------------------------------------------------------------------- folders


def test_folder_values_are_pil_pixels_over_255_and_labels_follow_sorted_names(
    tmp_path: Path,
) -> None:
    root = make_folder(tmp_path / "imgs", {"zebra": 4, "ant": 6})
    name = f"folder:{root}"
    info = data.info(name)
    assert info.class_names == ("ant", "zebra") and info.num_classes == 2
    assert info.input_shape == (3, 16, 16) and info.default_model == ""
    x_train, y_train = data.load_tensors(name, "train")
    x_test, y_test = data.load_tensors(name, "test")
    assert (len(y_train), len(y_test)) == (8, 2)  # round(0.2 · 10) for test
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    options = folder.parse_options({})
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        listing = folder.samples(root, split, options)
        for i, (path, label) in enumerate(listing):
            assert torch.equal(x[i], pil_pixels(path))
            assert int(y[i]) == label == ["ant", "zebra"].index(path.parent.name)
    files = {p for p, _ in folder.samples(root, "train", options)}
    files |= {p for p, _ in folder.samples(root, "test", options)}
    assert len(files) == 10  # the split is a partition of every image
    assert data.domain(name) == UNIT


def test_folder_split_is_seeded_and_fixed(tmp_path: Path) -> None:
    name = f"folder:{make_folder(tmp_path / 'imgs', {'a': 5, 'b': 5})}"
    first = data.load_tensors(name, "test")[0]
    assert torch.equal(first, data.load_tensors(name, "test")[0])
    other = data.load_tensors(name, "test", data_seed=1)[0]
    assert not torch.equal(first, other)
    assert len(data.load_tensors(name, "test", test_fraction=0.5)[1]) == 5


def test_folder_resize_and_grey(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", {"a": 2, "b": 2}, side=12)
    name = f"folder:{root}"
    x, _ = data.load_tensors(name, "train", size=[8, 6], mode="L")
    assert x.shape == (3, 1, 8, 6)
    assert data.info(name, size=8, mode="L").input_shape == (1, 8, 8)
    options = folder.parse_options({"size": [8, 6], "mode": "L"})
    path = folder.samples(root, "train", options)[0][0]
    assert torch.equal(x[0], pil_pixels(path, "L", (8, 6)))


def test_folder_train_and_test_subfolders(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs" / "train", {"cat": 3, "dog": 2})
    make_folder(tmp_path / "imgs" / "test", {"dog": 2}, seed=1)
    name = f"folder:{tmp_path / 'imgs'}"
    _, y_train = data.load_tensors(name, "train")
    _, y_test = data.load_tensors(name, "test")
    assert sorted(y_train.tolist()) == [0, 0, 0, 1, 1] and y_test.tolist() == [1, 1]
    loader = data.load(name, "train", batch_size=2)
    assert sum(len(b[1]) for b in loader) == 5


def test_folder_limit(tmp_path: Path) -> None:
    name = f"folder:{make_folder(tmp_path / 'imgs', {'a': 4, 'b': 4})}"
    assert data.load_tensors(name, "train", limit=3)[0].shape[0] == 3


@pytest.mark.parametrize(
    ("setup", "options", "message"),
    [
        (lambda r: make_folder(r, {"only": 3}), {}, "needs at least 2"),
        (lambda r: (make_folder(r, {"a": 2}), (r / "b").mkdir()), {}, "b/ holds no images"),
        (lambda r: make_folder(r / "train", {"a": 2, "b": 2}), {}, "no test/"),
        (lambda r: None, {}, "does not exist"),
        (lambda r: make_folder(r, {"a": 2, "b": 2}), {"size": 0}, "data option size"),
        (lambda r: make_folder(r, {"a": 2, "b": 2}), {"mode": "CMYK"}, "mode must be RGB or L"),
        (lambda r: make_folder(r, {"a": 2, "b": 2}), {"test_fraction": 1}, "test_fraction"),
        (lambda r: make_folder(r, {"a": 2, "b": 2}), {"noise": 1}, "unknown option 'noise'"),
    ],
)
def test_bad_folders_and_options_give_one_line(
    tmp_path: Path, setup: object, options: dict[str, object], message: str
) -> None:
    root = tmp_path / "imgs"
    setup(root)  # type: ignore[operator]
    with pytest.raises(LsakitError) as caught:
        data.load_tensors(f"folder:{root}", "train", **options)
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_folder_of_mixed_sizes_and_a_broken_image(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    make_folder(root / "train", {"a": 2, "b": 2})
    make_folder(root / "test", {"a": 1})
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "train" / "b" / "big.png")
    with pytest.raises(DataError, match=r"differ in size.*size=N"):
        data.load_tensors(f"folder:{root}", "train")
    assert data.load_tensors(f"folder:{root}", "train", size=16)[0].shape == (5, 3, 16, 16)
    (root / "test" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*bad\.png"):
        data.load_tensors(f"folder:{root}", "test")


# -------------------------------------------------------------------------------- tensor files


def _arrays(n: int = 20, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 4)).astype(np.float32), np.arange(n) % classes


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pt"])
def test_tensor_file_formats_with_and_without_test_split(tmp_path: Path, suffix: str) -> None:
    x, y = _arrays()
    path = tmp_path / f"data{suffix}"
    fields = {"x": x, "y": y, "x_test": x[:5], "y_test": y[:5]}
    if suffix == ".npz":
        np.savez(path, **fields)
    elif suffix == ".safetensors":
        safetensors.torch.save_file({k: torch.from_numpy(v) for k, v in fields.items()}, path)
    else:
        torch.save({k: torch.from_numpy(v) for k, v in fields.items()}, path)
    x_train, y_train = data.load_tensors(str(path), "train")
    x_test, y_test = data.load_tensors(str(path), "test")
    assert torch.equal(x_train, torch.from_numpy(x)) and torch.equal(y_train, torch.from_numpy(y))
    assert torch.equal(x_test, torch.from_numpy(x[:5])) and y_test.dtype == torch.int64
    info = data.info(str(path))
    assert (info.input_shape, info.num_classes, info.class_names) == ((4,), 3, ("0", "1", "2"))


def test_tensor_file_seeded_split_and_domain_from_file_and_option(tmp_path: Path) -> None:
    x, y = _arrays()
    path = tmp_path / "d.npz"
    np.savez(
        path, x=x * 2 - 1, y=y, domain=np.array([-1.0, 1.0]), class_names=np.array(list("abc"))
    )
    x_train, _ = data.load_tensors(str(path), "train")
    x_test, _ = data.load_tensors(str(path), "test")
    assert (len(x_train), len(x_test)) == (16, 4)
    together = torch.cat([x_train, x_test])
    assert torch.equal(together.sort(0).values, torch.from_numpy(x * 2 - 1).sort(0).values)
    assert data.domain(str(path)) == as_domain((-1, 1))
    assert data.domain(str(path), domain="unbounded") == UNBOUNDED  # the option wins
    assert data.info(str(path)).class_names == ("a", "b", "c")
    # text domains, and a per-feature (2, D) array
    np.savez(path, x=x, y=y, domain=np.array("unbounded"))
    assert data.domain(str(path)) == UNBOUNDED
    np.savez(path, x=x, y=y, domain=np.stack([np.zeros(4), np.full(4, 2.0)]))
    assert data.domain(str(path)).describe() == "per-feature box (4,) within [0, 2]"


@pytest.mark.parametrize(
    ("fields", "option", "message"),
    [
        ({"x": "x"}, None, "has no field 'y'"),
        ({"x": "x", "y": "y", "x_test": "x"}, None, "has x_test but no y_test"),
        ({"x": "xint", "y": "y"}, None, "field 'x': has dtype torch.int64, not a float"),
        ({"x": "x1d", "y": "y"}, None, "field 'x': has shape (20,)"),
        ({"x": "x", "y": "yfloat"}, None, "field 'y': has dtype torch.float32"),
        ({"x": "x", "y": "yshort"}, None, "field 'y': has shape (5,), but 'x' has 20"),
        ({"x": "x", "y": "yneg"}, None, "field 'y': has a negative label (-1)"),
        ({"x": "x", "y": "y", "class_names": "two"}, None, "field 'y': has label 2, but"),
        ({"x": "x", "y": "zeros"}, None, "holds only class 0"),
        ({"x": "big", "y": "y"}, None, "field 'x': has values in [0, 3], outside"),
        ({"x": "x", "y": "y"}, "0,0.5", "field 'x': has values in"),
        ({"x": "xnan", "y": "y"}, None, "field 'x': contains NaN"),
        ({"x": "x", "y": "y", "x_test": "x3", "y_test": "y"}, None, "field 'x_test': has samples"),
        ({"x": "x", "y": "y", "domain": "dom3"}, None, "field 'domain'"),
    ],
)
def test_bad_tensor_files_name_the_file_and_the_field(
    tmp_path: Path, fields: dict[str, str], option: str | None, message: str
) -> None:
    x, y = _arrays()
    values = {
        "x": x, "y": y, "xint": (x * 10).astype(np.int64), "x1d": x[:, 0], "yfloat": y.astype(
            np.float32), "yshort": y[:5], "yneg": y - 1, "two": np.array(["a", "b"]),
        "zeros": np.zeros(20, np.int64), "big": np.where(x > 0.5, 3.0, 0.0), "xnan": np.where(x > 0.5, np.nan, x),
        "x3": np.zeros((20, 3), np.float32), "dom3": np.zeros(3),
    }  # fmt: skip
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: values[v] for k, v in fields.items()})
    options = {} if option is None else {"domain": option}
    with pytest.raises(DataError) as caught:
        data.load_tensors(str(path), "train", **options)
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text


def test_unreadable_tensor_files(tmp_path: Path) -> None:
    for name in ("broken.npz", "broken.safetensors", "broken.pt"):
        (tmp_path / name).write_bytes(b"garbage" * 10)
        with pytest.raises(DataError, match=name):
            data.load_tensors(str(tmp_path / name))
    with pytest.raises(DataError, match="does not exist"):
        data.info(str(tmp_path / "missing.npz"))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(DataError, match="not a dict"):
        data.load_tensors(str(tmp_path / "list.pt"))
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match="never unpickles code"):
        data.load_tensors(str(tmp_path / "evil.pt"))
    with pytest.raises(ConfigError, match="input domain"):
        np.savez(tmp_path / "ok.npz", x=_arrays()[0], y=_arrays()[1])
        data.domain(str(tmp_path / "ok.npz"), domain="sideways")


# ------------------------------------------------------------------------------------- presets


def test_user_presets_follow_the_domain(tmp_path: Path) -> None:
    x, y = _arrays()
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    unit = preset(str(path))
    assert unit.train.model == "" and unit.train_eps == pytest.approx(8 / 255)
    assert "salt=0.02" in unit.perturbations and unit.fgsm_eps is not None
    assert unit.fgsm_eps[-1] == pytest.approx(16 / 255)
    wide = preset(str(path), domain="-1,1")
    assert wide.train_eps == pytest.approx(16 / 255)
    assert wide.train.data_options == {"domain": "-1,1"}
    free = preset(str(path), domain="unbounded")
    assert free.train_eps == 0.1 and not any(
        p.startswith(("salt", "pepper")) for p in free.perturbations
    )
    assert preset("mnist").fgsm_eps is None
