"""lsakit.data: registry, options, moons, IDX (MNIST layout), CIFAR-10 batches, data directories."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_moons

from lsakit import data
from lsakit.data import cifar, idx, paths
from lsakit.errors import ConfigError, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# ---------------------------------------------------------------------------------------------
# Fixture writers: the exact on-disk formats of the official files.
# ---------------------------------------------------------------------------------------------

_IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic 0x0000<type><ndim>, big-endian uint32 dims, big-endian values."""
    big = array.astype(array.dtype.newbyteorder(">"))
    code = _IDX_CODES[big.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + big.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    content = idx_bytes(array)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def mnist_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 27, 27], images[0, 3, 5] = 0, 255, 128
    return images, rng.integers(0, 10, size=n, dtype=np.uint8)


def write_mnist(directory: Path, *, gz: bool, n_train: int = 5, n_test: int = 3) -> dict[str, Any]:
    """A tiny MNIST-layout data set; returns the arrays written, per split."""
    written = {}
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = mnist_arrays(n, seed)
        images_stem, labels_stem = idx.IDX_FILES[split]
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{images_stem}{suffix}", images, gz=gz)
        write_idx(directory / f"{labels_stem}{suffix}", labels, gz=gz)
        written[split] = (images, labels)
    return written


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes and str as Python 2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), as the
    official CIFAR batches (pickled by Python 2) do, numpy's dtype arguments included; Python 3
    would write ``_codecs.encode`` calls and BINUNICODE."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("ascii") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def cifar_batch_bytes(images: np.ndarray, labels: list[int], *, py2: bool) -> bytes:
    """A CIFAR batch pickle: dict with bytes keys, (N, 3072) uint8 data, a list of int labels."""
    batch = {
        b"batch_label": b"fixture batch",
        b"labels": labels,
        b"data": images,
        b"filenames": [b"img_%d.png" % i for i in range(len(labels))],
    }
    if not py2:
        return pickle.dumps(batch, protocol=2)
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(batch)
    # numpy 1 (which wrote the official files) named this module numpy.core.multiarray.
    return out.getvalue().replace(
        b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
    )


def cifar_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar_batches(
    folder: Path, *, per_batch: int = 2, py2: bool = False
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """All six official batch files in ``folder``; returns name → (rows, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate((*cifar.BATCHES["train"], *cifar.BATCHES["test"])):
        rows = cifar_rows(per_batch, seed=10 + i)
        labels = [(i + k) % 10 for k in range(per_batch)]
        (folder / name).write_bytes(cifar_batch_bytes(rows, labels, py2=py2))
        written[name] = (rows, labels)
    return written


def write_cifar_archive(archive: Path, source: Path, extra: dict[str, bytes] | None = None) -> None:
    """The official tar.gz layout: every batch under ``cifar-10-batches-py/``."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(source.iterdir()):
            tar.add(path, arcname=f"{cifar.BATCHES_DIR}/{path.name}")
        for name, content in (extra or {}).items():
            member = tarfile.TarInfo(name)
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))


def as_unit(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.astype(np.float32) / np.float32(255))


# ---------------------------------------------------------------------------------------------
# Registry and options
# ---------------------------------------------------------------------------------------------


def test_names_and_info_describe_the_paper_data_sets() -> None:
    assert data.names() == ["moons", "mnist", "fashion-mnist", "cifar10"]
    expected = {
        "moons": ((2,), 2, "model_a"),
        "mnist": ((1, 28, 28), 10, "model_b"),
        "fashion-mnist": ((1, 28, 28), 10, "model_b"),
        "cifar10": ((3, 32, 32), 10, "vgg19"),
    }
    for name, (shape, classes, model) in expected.items():
        described = data.info(name)
        assert (described.name, described.input_shape, described.num_classes) == (
            name,
            shape,
            classes,
        )
        assert described.default_model == model
        assert len(described.class_names) == classes
        assert described.description
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.info("mnist").num_classes = 3  # type: ignore[misc]


def test_names_are_matched_ignoring_case_and_underscores() -> None:
    assert data.info("Fashion_MNIST").name == "fashion-mnist"


@pytest.mark.parametrize("call", [data.info, data.load, data.load_tensors])
def test_unknown_data_set_lists_the_known_names_and_a_close_match(call: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        call("cifar-10")
    message = str(caught.value)
    assert "'cifar-10'" in message and "did you mean 'cifar10'" in message
    assert all(name in message for name in data.names())
    assert "\n" not in message


def test_unknown_option_names_the_option_and_a_close_match() -> None:
    with pytest.raises(ConfigError, match=r"'batchsize'.*did you mean 'batch_size'"):
        data.load("moons", batchsize=3)
    # Options of one data set are not accepted by another.
    with pytest.raises(ConfigError, match="'noise' for data set 'mnist'"):
        data.load_tensors("mnist", noise=0.2)
    # Loader options belong to load, not to load_tensors.
    with pytest.raises(ConfigError, match="'batch_size'"):
        data.load_tensors("moons", batch_size=3)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("batch_size", 0),
        ("batch_size", True),
        ("batch_size", 2.0),
        ("shuffle", "yes"),
        ("num_workers", -1),
        ("limit", 0),
        ("limit", "10"),
        ("seed", -1),
        ("seed", 2**32),
        ("data_seed", -1),
        ("data_seed", 2**32),
        ("download", "no"),
        ("data_dir", 3),
        ("n_samples", 5),
        ("noise", -0.1),
        ("noise", float("nan")),
        ("noise", "0.1"),
    ],
)
def test_invalid_option_values_raise_config_error_naming_the_option(
    option: str, value: object
) -> None:
    with pytest.raises(ConfigError, match=option):
        data.load("moons", **{option: value})


def test_unknown_split_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'valid'.*'train' or 'test'"):
        data.load_tensors("moons", "valid")


# ---------------------------------------------------------------------------------------------
# Moons
# ---------------------------------------------------------------------------------------------


def test_moons_default_split_shapes_dtypes_and_balance() -> None:
    x_train, y_train = data.load_tensors("moons", "train")
    x_test, y_test = data.load_tensors("moons", "test")
    assert x_train.shape == (1000, 2) and x_test.shape == (500, 2)
    assert x_train.dtype == x_test.dtype == torch.float32
    assert y_train.dtype == y_test.dtype == torch.int64
    # Stratified: the classes are exactly balanced in both splits.
    assert torch.bincount(y_train).tolist() == [500, 500]
    assert torch.bincount(y_test).tolist() == [250, 250]


def test_moons_unit_range_is_exact_over_train_and_test() -> None:
    x = torch.cat([data.load_tensors("moons", split)[0] for split in ("train", "test")])
    assert x.amin(dim=0).tolist() == [0.0, 0.0]
    assert float(x.max()) == 1.0
    # The narrower feature keeps its aspect: it does not reach 1.
    assert sorted(x.amax(dim=0).tolist())[0] < 1.0


def test_moons_map_is_one_isotropic_affine_map_of_the_raw_points() -> None:
    split = data.make_moons_split(n_samples=300, noise=0.05, seed=4)
    raw, _ = make_moons(n_samples=300, noise=0.05, random_state=4)
    unit = torch.cat([split.x_train, split.x_test]).double()
    recovered = unit * split.scale + torch.tensor(split.offset, dtype=torch.float64)
    # The split permutes the points: compare as sorted rows.
    order = np.lexsort(recovered.numpy().T[::-1])
    raw_order = np.lexsort(raw.T[::-1])
    np.testing.assert_allclose(recovered.numpy()[order], raw[raw_order], atol=1e-6)
    assert split.scale == pytest.approx(float(np.ptp(raw, axis=0).max()), rel=1e-12)
    assert data.moons_scale(300, 0.05, 4) == split.scale


@settings(max_examples=25, deadline=None)
@given(
    n_samples=st.integers(min_value=6, max_value=80),
    noise=st.floats(min_value=0.0, max_value=0.5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_moons_always_span_exactly_zero_to_one(n_samples: int, noise: float, seed: int) -> None:
    split = data.make_moons_split(n_samples, noise, seed)
    x = torch.cat([split.x_train, split.x_test])
    assert len(x) == n_samples and len(split.x_test) == -(-n_samples // 3)
    assert x.amin(dim=0).tolist() == [0.0, 0.0] and float(x.max()) == 1.0
    assert set(split.y_train.tolist()) == set(split.y_test.tolist()) == {0, 1}


def test_moons_split_is_fixed_by_the_data_seed() -> None:
    first = data.load_tensors("moons", "test", data_seed=7)
    again = data.load_tensors("moons", "test", data_seed=7)
    other = data.load_tensors("moons", "test", data_seed=8)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # The default is data seed 0, stable across calls.
    assert torch.equal(data.load_tensors("moons")[0], data.load_tensors("moons", data_seed=0)[0])


def test_loader_seed_changes_the_order_but_never_the_data() -> None:
    # A training seed must not change which points are train and test (no leakage between runs).
    a = _order(data.load("moons", "test", shuffle=False, seed=1))
    b = _order(data.load("moons", "test", shuffle=False, seed=2))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="seed"):
        data.load_tensors("moons", "test", seed=1)


def test_moons_options_change_size_and_noise() -> None:
    x, _ = data.load_tensors("moons", "train", n_samples=30, noise=0.0)
    assert x.shape == (20, 2)
    x_noisy, _ = data.load_tensors("moons", "train", n_samples=30, noise=0.3)
    assert not torch.equal(x, x_noisy)


def test_generated_data_sets_accept_and_ignore_file_options(tmp_path: Path) -> None:
    x, _ = data.load_tensors("moons", data_dir=tmp_path / "absent", download=False)
    assert torch.equal(x, data.load_tensors("moons")[0])


# ---------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_files_load_with_exact_values(tmp_path: Path, gz: bool) -> None:
    written = write_mnist(tmp_path / "mnist", gz=gz)
    for split in ("train", "test"):
        x, y = data.load_tensors("mnist", split, data_dir=tmp_path, download=False)
        images, labels = written[split]
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
        assert torch.equal(x[:, 0], as_unit(images))
        assert float(x[0, 0, 0, 0]) == 0.0 and float(x[0, 0, 27, 27]) == 1.0
        assert float(x[0, 0, 3, 5]) == float(np.float32(128) / np.float32(255))


def test_plain_and_gzipped_files_mix(tmp_path: Path) -> None:
    images, labels = mnist_arrays(4, seed=3)
    write_idx(tmp_path / "mnist" / "t10k-images-idx3-ubyte", images, gz=False)
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", labels, gz=True)
    x, y = data.load_tensors("mnist", "test", data_dir=tmp_path, download=False)
    assert torch.equal(x[:, 0], as_unit(images)) and y.tolist() == labels.tolist()


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_decodes_every_type_big_endian(tmp_path: Path, dtype: str) -> None:
    values = np.array([[0, 1, 2], [-3 if np.dtype(dtype).kind != "u" else 3, 100, 7]])
    array = values.astype(dtype)
    parsed = idx.read_idx(write_idx(tmp_path / "a.idx", array, gz=False))
    assert parsed.shape == (2, 3) and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, array)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=4),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_parse_idx_round_trips_any_shape(shape: list[int], seed: int) -> None:
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    np.testing.assert_array_equal(idx.parse_idx(idx_bytes(array), "mem"), array)


def test_truncated_idx_file_raises_data_error_naming_it(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*truncated") as caught:
        data.load_tensors("mnist", "train", data_dir=tmp_path, download=False)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_truncated_gzip_stream_raises_data_error_naming_it(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", gz=True)
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match=re.escape(str(path))):
        data.load_tensors("mnist", "test", data_dir=tmp_path, download=False)


def test_bad_magic_raises_data_error(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x08\x03\x00\x00" + path.read_bytes()[4:])
    with pytest.raises(DataError, match="magic number 0x08030000"):
        data.load_tensors("mnist", "test", data_dir=tmp_path, download=False)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"\x00\x00", "only 2 bytes"), (b"\x00\x00\x08\x03\x00\x00\x00\x01", "header")],
)
def test_short_headers_raise_data_error(content: bytes, problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        idx.parse_idx(content, "f.idx")


def test_trailing_bytes_are_a_corrupt_file() -> None:
    with pytest.raises(DataError, match="needs 11 bytes, the file has 12"):
        idx.parse_idx(idx_bytes(np.arange(3, dtype=np.uint8)) + b"\x00", "f.idx")


def test_images_and_labels_must_agree(tmp_path: Path) -> None:
    images, labels = mnist_arrays(4, seed=0)
    folder = tmp_path / "mnist"
    write_idx(folder / "t10k-images-idx3-ubyte", images, gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", labels[:3], gz=False)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*one ubyte label per image"):
        data.load_tensors("mnist", "test", data_dir=tmp_path, download=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([0, 1, 10, 2], np.uint8), gz=False)
    with pytest.raises(DataError, match="label 10"):
        data.load_tensors("mnist", "test", data_dir=tmp_path, download=False)
    write_idx(folder / "t10k-images-idx3-ubyte", images[:, :27], gz=False)
    with pytest.raises(DataError, match="not 28×28 ubyte images"):
        data.load_tensors("mnist", "test", data_dir=tmp_path, download=False)


def test_missing_files_without_download_list_files_and_directories(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        data.load_tensors("mnist", "test", data_dir=tmp_path, download=False)
    message = str(caught.value)
    for needed in ("t10k-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]"):
        assert needed in message
    assert str(tmp_path / "mnist") in message and "LSAKIT_DATA" in message
    assert "download=True" in message and "\n" not in message


def test_limit_keeps_the_first_samples(tmp_path: Path) -> None:
    written = write_mnist(tmp_path / "mnist", gz=True)
    x, y = data.load_tensors("mnist", "train", data_dir=tmp_path, download=False, limit=2)
    assert torch.equal(x[:, 0], as_unit(written["train"][0][:2]))
    assert y.tolist() == written["train"][1][:2].tolist()


def test_real_mnist_train(shared_data: Path) -> None:
    x, y = data.load_tensors("mnist", "train", data_dir=shared_data, download=False)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert int(y[0]) == 5
    assert torch.bincount(y).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]


def test_real_mnist_test_through_the_environment(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LSAKIT_DATA", str(shared_data))
    x, y = data.load_tensors("mnist", "test", download=False)
    assert x.shape == (10000, 1, 28, 28)
    assert y[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(
    not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed at {FASHION_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_the_debian_package(tmp_path: Path) -> None:
    # The data directory is empty, so the files come from the Debian directory.
    x, y = data.load_tensors("fashion-mnist", "test", data_dir=tmp_path, download=False)
    assert x.shape == (10000, 1, 28, 28) and float(x.max()) == 1.0
    assert int(y[0]) == 9  # an ankle boot
    assert torch.bincount(y).tolist() == [1000] * 10


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("py2", [False, True], ids=["protocol2", "python2-strings"])
def test_cifar_batches_load_with_exact_values_in_nchw(tmp_path: Path, py2: bool) -> None:
    written = write_cifar_batches(tmp_path / "cifar10" / cifar.BATCHES_DIR, py2=py2)
    x, y = data.load_tensors("cifar10", "test", data_dir=tmp_path, download=False)
    rows, labels = written["test_batch"]
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == labels
    unit = as_unit(rows)
    # Official row layout: 1024 red, 1024 green, 1024 blue, each a row-major 32×32 plane.
    for n, c, h, w in [(0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 0, 0), (1, 2, 31, 31), (1, 1, 5, 9)]:
        assert x[n, c, h, w] == unit[n, c * 1024 + h * 32 + w]
    assert torch.equal(x.reshape(2, -1), unit)


def test_cifar_train_concatenates_the_five_batches_in_order(tmp_path: Path) -> None:
    written = write_cifar_batches(tmp_path / "cifar10" / cifar.BATCHES_DIR)
    x, y = data.load_tensors("cifar10", "train", data_dir=tmp_path, download=False)
    names = cifar.BATCHES["train"]
    assert x.shape == (10, 3, 32, 32)
    assert y.tolist() == [label for name in names for label in written[name][1]]
    assert torch.equal(x.reshape(10, -1), as_unit(np.concatenate([written[n][0] for n in names])))


def test_cifar_limit_stops_before_parsing_later_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10" / cifar.BATCHES_DIR
    write_cifar_batches(folder)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    x, _ = data.load_tensors("cifar10", "train", data_dir=tmp_path, download=False, limit=3)
    assert x.shape == (3, 3, 32, 32)
    with pytest.raises(DataError, match="data_batch_3"):
        data.load_tensors("cifar10", "train", data_dir=tmp_path, download=False, limit=5)


def test_cifar_archive_loads_and_caches_the_batches(tmp_path: Path) -> None:
    written = write_cifar_batches(tmp_path / "source", py2=True)
    (tmp_path / "cifar10").mkdir()
    write_cifar_archive(tmp_path / "cifar10" / cifar.ARCHIVE, tmp_path / "source")
    x, y = data.load_tensors("cifar10", "train", data_dir=tmp_path, download=False)
    assert y.tolist() == [label for n in cifar.BATCHES["train"] for label in written[n][1]]
    cached = tmp_path / "cifar10" / cifar.BATCHES_DIR
    assert sorted(p.name for p in cached.iterdir()) == sorted(cifar.BATCHES["train"])
    # The cached batches give the same data without the archive.
    (tmp_path / "cifar10" / cifar.ARCHIVE).unlink()
    x_cached, _ = data.load_tensors("cifar10", "train", data_dir=tmp_path, download=False)
    assert torch.equal(x, x_cached)


def test_corrupt_batch_in_the_archive_is_not_cached(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path / "source")
    (tmp_path / "source" / "test_batch").write_bytes(b"\x80\x02garbage")
    (tmp_path / "cifar10").mkdir()
    write_cifar_archive(tmp_path / "cifar10" / cifar.ARCHIVE, tmp_path / "source")
    with pytest.raises(DataError, match=re.escape(f"{cifar.ARCHIVE}:{cifar.BATCHES_DIR}/test_")):
        data.load_tensors("cifar10", "test", data_dir=tmp_path, download=False)
    assert not (tmp_path / "cifar10" / cifar.BATCHES_DIR / "test_batch").exists()


def test_cifar_archive_member_names_cannot_write_outside(tmp_path: Path) -> None:
    write_cifar_batches(tmp_path / "source")
    (tmp_path / "source" / "test_batch").unlink()
    evil = {
        "../escaped": b"x",
        "/tmp/lsakit-absolute-escape": b"x",
        f"{cifar.BATCHES_DIR}/../../escaped2": b"x",
        f"{cifar.BATCHES_DIR}/./test_batch": cifar_batch_bytes(cifar_rows(1, 0), [3], py2=False),
    }
    data_dir = tmp_path / "data"
    (data_dir / "cifar10").mkdir(parents=True)
    write_cifar_archive(data_dir / "cifar10" / cifar.ARCHIVE, tmp_path / "source", evil)
    _, y = data.load_tensors("cifar10", "test", data_dir=data_dir, download=False)
    assert y.tolist() == [3]  # the normalized name matches; the escaping ones are ignored
    assert not (tmp_path / "escaped").exists() and not (data_dir / "escaped").exists()
    assert not (data_dir / "escaped2").exists()
    assert not Path("/tmp/lsakit-absolute-escape").exists()


def test_cifar_archive_link_member_is_not_followed(tmp_path: Path) -> None:
    archive = tmp_path / "cifar10" / cifar.ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo(f"{cifar.BATCHES_DIR}/test_batch")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/test_batch"):
        data.load_tensors("cifar10", "test", data_dir=tmp_path, download=False)


def test_corrupt_cifar_archive_raises_data_error_naming_it(tmp_path: Path) -> None:
    archive = tmp_path / "cifar10" / cifar.ARCHIVE
    archive.parent.mkdir()
    archive.write_bytes(gzip.compress(b"not a tar at all" * 100)[:50])
    with pytest.raises(DataError, match=re.escape(f"cannot read the archive {archive}")):
        data.load_tensors("cifar10", "test", data_dir=tmp_path, download=False)


class _RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar10" / cifar.BATCHES_DIR
    folder.mkdir(parents=True)
    payload = {b"data": _RunsAShellCommand(marker), b"labels": [0]}
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=r"refuses to load code from a data file.*system") as caught:
        data.load_tensors("cifar10", "test", data_dir=tmp_path, download=False)
    assert str(folder / "test_batch") in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x80\x02}q\x00", "not a readable CIFAR batch"),
        (pickle.dumps([1, 2], protocol=2), "holds a list, not a dict"),
        (pickle.dumps({b"data": np.zeros((1, 10), np.uint8), b"labels": [0]}), "shape"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}), "uint8"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "1 labels"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}), "outside"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["a"]}), "integers"),
    ],
)
def test_invalid_cifar_batches_raise_data_error(content: bytes, problem: str) -> None:
    with pytest.raises(DataError, match=problem):
        cifar.parse_batch(content, "some_batch")


def test_cifar_batch_with_str_keys_is_accepted() -> None:
    rows = cifar_rows(1, 5)
    images, labels = cifar.parse_batch(pickle.dumps({"data": rows, "labels": [4]}), "b")
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [4]


def test_missing_cifar_lists_batches_and_archive(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        data.load_tensors("cifar10", "test", data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert "cifar-10-batches-py/test_batch" in message and cifar.ARCHIVE in message
    assert str(tmp_path / "cifar10") in message


# ---------------------------------------------------------------------------------------------
# DataLoader options
# ---------------------------------------------------------------------------------------------


def _order(loader: Any) -> torch.Tensor:
    return torch.cat([x for x, _ in loader])


def test_loader_batches_and_dtypes() -> None:
    loader = data.load("moons", "test", batch_size=64)
    sizes = [len(x) for x, _ in loader]
    assert sizes == [64] * 7 + [52]
    x, y = next(iter(loader))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (64, 2)
    assert data.load("moons", "test").batch_size == 128


def test_loader_default_shuffle_is_train_only() -> None:
    x_test, _ = data.load_tensors("moons", "test")
    assert torch.equal(_order(data.load("moons", "test")), x_test)
    x_train, _ = data.load_tensors("moons", "train")
    shuffled = _order(data.load("moons", "train", seed=0))
    assert not torch.equal(shuffled, x_train)
    # Same samples, another order.
    assert torch.equal(
        shuffled[torch.argsort(shuffled[:, 0])], x_train[torch.argsort(x_train[:, 0])]
    )
    assert torch.equal(_order(data.load("moons", "train", shuffle=False)), x_train)


def test_loader_shuffle_order_is_fixed_by_the_seed() -> None:
    first = _order(data.load("moons", "train", n_samples=60, seed=3))
    again = _order(data.load("moons", "train", n_samples=60, seed=3))
    assert torch.equal(first, again)
    loader = data.load("moons", "test", shuffle=True, seed=5)
    assert not torch.equal(_order(loader), _order(data.load("moons", "test", shuffle=True, seed=6)))


def test_loader_limit_takes_the_first_samples_of_the_split() -> None:
    loader = data.load("moons", "test", limit=10, batch_size=4)
    assert len(loader.dataset) == 10  # type: ignore[arg-type]
    assert torch.equal(_order(loader), data.load_tensors("moons", "test")[0][:10])
    # A limit beyond the split keeps the whole split.
    assert len(data.load("moons", "test", limit=10**6).dataset) == 500  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Data directories
# ---------------------------------------------------------------------------------------------


def test_data_dir_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("LSAKIT_DATA", raising=False)
    assert data.resolve_data_dir() == tmp_path / "home" / ".cache" / "lsakit" / "data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_data_dir() == tmp_path / "xdg" / "lsakit" / "data"
    monkeypatch.setenv("LSAKIT_DATA", str(tmp_path / "env"))
    assert data.resolve_data_dir() == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data.resolve_data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"


def test_empty_env_and_relative_xdg_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LSAKIT_DATA", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert data.resolve_data_dir() == tmp_path / ".cache" / "lsakit" / "data"


def test_files_are_found_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_mnist(tmp_path / "env" / "mnist", gz=True)
    monkeypatch.setenv("LSAKIT_DATA", str(tmp_path / "env"))
    _, y = data.load_tensors("mnist", "test", download=False)
    assert y.tolist() == written["test"][1].tolist()
    # An explicit directory takes precedence over the environment.
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "explicit" / "mnist"))):
        data.load_tensors("mnist", "test", data_dir=tmp_path / "explicit", download=False)


def test_extra_directories_are_searched_after_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(paths.EXTRA_DIRS, "fashion-mnist", (tmp_path / "system",))
    system = write_mnist(tmp_path / "system", gz=True)
    _, y = data.load_tensors("fashion-mnist", "test", data_dir=tmp_path / "data", download=False)
    assert y.tolist() == system["test"][1].tolist()
    # A copy in the data directory wins over the system one.
    images, labels = mnist_arrays(2, seed=9)
    write_idx(tmp_path / "data" / "fashion-mnist" / "t10k-images-idx3-ubyte", images, gz=False)
    write_idx(tmp_path / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte", labels, gz=False)
    _, y = data.load_tensors("fashion-mnist", "test", data_dir=tmp_path / "data", download=False)
    assert y.tolist() == labels.tolist()


def test_missing_fashion_message_names_the_system_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(paths.EXTRA_DIRS, "fashion-mnist", (tmp_path / "system",))
    with pytest.raises(DataError) as caught:
        data.load_tensors("fashion-mnist", "test", data_dir=tmp_path / "data", download=False)
    assert str(tmp_path / "system") in str(caught.value)
    assert str(tmp_path / "data" / "fashion-mnist") in str(caught.value)
