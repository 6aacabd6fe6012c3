"""Your own tensors: a ``.npz``, ``.safetensors`` or ``.pt`` file as a data set (``--dataset FILE``).

Fields (names exact):

==============  ==========================================================================
``x``           float array (N, …) — one sample per row, any sample shape (N, D), (N, C, H, W)
``y``           integer array (N,) — class indices 0 … K−1
``x_test``      optional, like ``x`` (same sample shape); with ``y_test``
``y_test``      optional, like ``y``
``domain``      optional: where the inputs live — text (``"0,1"``, ``"-1,1"``, ``"unbounded"``)
                or an array ``[low, high]`` of shape (2,) or (2, *sample-shape broadcastable)
``class_names`` optional: one name per class (npz: a string array; pt: a list of str;
                safetensors: JSON text in the header metadata)
==============  ==========================================================================

In a ``.safetensors`` file ``domain`` and ``class_names`` may be header metadata (text). A
``.pt`` file is read with ``torch.load(weights_only=True)`` (plain tensors and containers only,
never code) and must hold a dict; a ``.npz`` file is read without pickle.

The domain is, in order: the ``domain`` data option (``--domain``), the file's ``domain``
field, else [0, 1]. Without ``x_test`` the file is split once, reproducibly: ``test_fraction``
(0.2) of the samples, chosen by a permutation seeded with ``data_seed`` (0), become the test
split, the rest (in that permuted order) the training split; with ``x_test`` both splits are
used in the file's order (store the training samples shuffled: the trainer holds out the last
10 % of them for validation). Every problem (missing field, wrong shape or dtype, labels out of
range, values outside the domain) is a one-line :class:`~lsakit.errors.DataError` naming the file
and the field.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from lsakit._io import load_torch_file, one_line
from lsakit.data.folder import seed_option, seeded_split, test_fraction_option
from lsakit.domain import UNIT, InputDomain, as_domain
from lsakit.errors import DataError, LsakitError

SUFFIXES: Final = (".npz", ".safetensors", ".pt", ".pth")
OPTIONS: Final = ("domain", "test_fraction", "data_seed")
FIELDS: Final = ("x", "y", "x_test", "y_test", "domain", "class_names")


def is_tensor_file(name: str) -> bool:
    """Whether a data set name is a tensor file (by its suffix)."""
    return name.strip().lower().endswith(SUFFIXES)


@dataclass(frozen=True, eq=False)
class TensorData:
    """A validated tensor file: both splits, the domain and the class names."""

    path: Path
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    domain: InputDomain
    class_names: tuple[str, ...]
    #: whether the test split came from the file (x_test) rather than the seeded split
    has_test: bool

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])


def _bad(path: Path, field: str, problem: str, fix: str) -> DataError:
    return DataError(f"data file {path}, field {field!r}: {problem}; {fix}")


# --------------------------------------------------------------------------------------- reading


def _read_npz(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            fields: dict[str, Any] = {}
            for name in names:
                try:
                    fields[name] = archive[name]
                except ValueError:
                    raise _bad(
                        path,
                        name,
                        "is an object array (needs pickle, which lsakit never loads)",
                        "store numbers (or a string array for class_names)",
                    ) from None
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as err:
        raise DataError(
            f"data file {path} is not a readable .npz archive ({one_line(err)}); save it with "
            f"numpy.savez(path, x=…, y=…)"
        ) from None
    return fields


def _read_safetensors(path: Path) -> dict[str, Any]:
    import safetensors
    import safetensors.torch

    try:
        fields: dict[str, Any] = dict(safetensors.torch.load_file(path, device="cpu"))
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata: dict[str, str] = handle.metadata() or {}
    except (safetensors.SafetensorError, OSError) as err:
        raise DataError(
            f"data file {path} is not a readable safetensors file ({one_line(err)}); save it "
            f"with safetensors.torch.save_file({{'x': …, 'y': …}}, path)"
        ) from None
    for key in ("domain", "class_names"):
        if key in metadata and key not in fields:
            fields[key] = metadata[key]
    return fields


def _read_pt(path: Path) -> dict[str, Any]:
    loaded = load_torch_file(
        path,
        lambda message: DataError(f"data file {message}"),
        "save a dict of tensors with torch.save({'x': …, 'y': …}, path)",
    )
    if not isinstance(loaded, Mapping):
        raise DataError(
            f"data file {path} holds a {type(loaded).__name__}, not a dict; save {{'x': …, 'y': …}}"
        )
    return {str(k): v for k, v in loaded.items()}


# ------------------------------------------------------------------------------------ validation


def _tensor(path: Path, field: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(value))
    kind = f"an array of dtype {value.dtype}" if isinstance(value, np.ndarray) else None
    raise _bad(
        path,
        field,
        f"is {kind or type(value).__name__}, not a numeric array",
        "store a numeric tensor/array",
    )


def _inputs(path: Path, field: str, value: Any) -> torch.Tensor:
    x = _tensor(path, field, value)
    if not x.is_floating_point():
        raise _bad(
            path,
            field,
            f"has dtype {x.dtype}, not a float dtype",
            "store floats (e.g. images as pixel / 255 in [0, 1])",
        )
    if x.dim() < 2 or x.shape[0] < 1:
        raise _bad(
            path,
            field,
            f"has shape {tuple(x.shape)}; it needs (N, …) with N ≥ 1 samples",
            "store one sample per row, e.g. (N, D) or (N, C, H, W)",
        )
    x = x.to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise _bad(path, field, "contains NaN or inf", "remove or fix those samples")
    return x


def _labels(path: Path, field: str, value: Any, n: int, inputs: str) -> torch.Tensor:
    y = _tensor(path, field, value)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise _bad(
            path,
            field,
            f"has dtype {y.dtype}, not an integer dtype",
            "store class indices as integers 0 … K−1",
        )
    if y.dim() != 1 or y.shape[0] != n:
        raise _bad(
            path,
            field,
            f"has shape {tuple(y.shape)}, but {inputs!r} has {n} samples",
            f"store one label per sample, shape ({n},)",
        )
    y = y.to(torch.int64)
    if bool((y < 0).any()):
        raise _bad(
            path,
            field,
            f"has a negative label ({int(y.min())})",
            "store class indices 0 … K−1",
        )
    return y


def _text_list(path: Path, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _bad(
                path, "class_names", "is text but not a JSON list", 'store e.g. ["cat", "dog"]'
            ) from None
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _bad(
            path,
            "class_names",
            f"is {type(value).__name__}, not a list of names",
            "store one string per class",
        )
    return tuple(value)


def _file_domain(path: Path, value: Any) -> InputDomain:
    try:
        if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.ndim == 0:
            value = str(value)
        if isinstance(value, str):
            text = value.strip()
            return as_domain(json.loads(text) if text.startswith("{") else text)
        if isinstance(value, list | tuple):
            return as_domain(tuple(value))
        bounds = _tensor(path, "domain", value).to(torch.float64)
        if bounds.dim() == 0 or bounds.shape[0] != 2:
            raise _bad(
                path,
                "domain",
                f"has shape {tuple(bounds.shape)}; it needs (2, …) = [low, high]",
                "store [low, high], or text like '-1,1' or 'unbounded'",
            )
        return as_domain((bounds[0], bounds[1]))
    except (LsakitError, json.JSONDecodeError) as err:
        if isinstance(err, DataError):
            raise
        raise _bad(
            path,
            "domain",
            f"is not a domain ({one_line(err)})",
            "store [low, high], or text like '-1,1' or 'unbounded'",
        ) from None


def _check_in_domain(path: Path, field: str, x: torch.Tensor, domain: InputDomain) -> None:
    try:
        domain.check_sample_shape(tuple(x.shape[1:]))
    except LsakitError as err:
        raise _bad(path, "domain", one_line(err), "give bounds that fit one sample") from None
    if not domain.contains(x):
        raise _bad(
            path, field,
            f"has values in [{float(x.min()):.4g}, {float(x.max()):.4g}], outside the declared "
            f"input domain {domain.describe()}",
            "rescale the data, or declare its domain (a 'domain' field in the file, or --domain "
            "LOW,HIGH / unbounded)",
        )  # fmt: skip


@functools.lru_cache(maxsize=2)
def _read_cached(
    path: Path, stamp: tuple[int, int], domain_text: str | None
) -> tuple[dict[str, torch.Tensor], InputDomain, tuple[str, ...]]:
    suffix = path.suffix.lower()
    raw = (
        _read_npz(path)
        if suffix == ".npz"
        else _read_safetensors(path)
        if suffix == ".safetensors"
        else _read_pt(path)
    )
    for required in ("x", "y"):
        if required not in raw:
            raise DataError(
                f"data file {path} has no field {required!r} (it has: "
                f"{', '.join(sorted(raw)) or 'nothing'}); store x (N, …) floats and y (N,) "
                f"integer labels, optionally x_test/y_test and domain"
            )
    if ("x_test" in raw) != ("y_test" in raw):
        have, lack = ("x_test", "y_test") if "x_test" in raw else ("y_test", "x_test")
        raise DataError(f"data file {path} has {have} but no {lack}; store both or neither")
    tensors = {"x": _inputs(path, "x", raw["x"])}
    tensors["y"] = _labels(path, "y", raw["y"], tensors["x"].shape[0], "x")
    if "x_test" in raw:
        tensors["x_test"] = _inputs(path, "x_test", raw["x_test"])
        if tensors["x_test"].shape[1:] != tensors["x"].shape[1:]:
            raise _bad(
                path, "x_test",
                f"has samples of shape {tuple(tensors['x_test'].shape[1:])}, but x has "
                f"{tuple(tensors['x'].shape[1:])}",
                "store test samples shaped like the training samples",
            )  # fmt: skip
        tensors["y_test"] = _labels(
            path, "y_test", raw["y_test"], tensors["x_test"].shape[0], "x_test"
        )
    if domain_text is not None:
        domain = _option_domain(domain_text)
    elif "domain" in raw:
        domain = _file_domain(path, raw["domain"])
    else:
        domain = UNIT
    for field in ("x", "x_test"):
        if field in tensors:
            _check_in_domain(path, field, tensors[field], domain)
    largest = max(int(tensors[f].max()) for f in ("y", "y_test") if f in tensors)
    if "class_names" in raw:
        names = _text_list(path, raw["class_names"])
        for field in ("y", "y_test"):
            if field in tensors and int(tensors[field].max()) >= len(names):
                raise _bad(
                    path, field,
                    f"has label {int(tensors[field].max())}, but class_names names "
                    f"{len(names)} classes (0 … {len(names) - 1})",
                    "fix the labels or class_names",
                )  # fmt: skip
    else:
        names = tuple(str(k) for k in range(largest + 1))
    if len(names) < 2:
        raise _bad(
            path,
            "y",
            "holds only class 0; a classifier needs at least 2 classes",
            "store labels 0 … K−1 with K ≥ 2",
        )
    return tensors, domain, names


def _option_domain(text: str) -> InputDomain:
    return InputDomain.from_json(json.loads(text))


def domain_option(value: object) -> str | None:
    """The ``domain`` data option as canonical text for caching (None when not given)."""
    if value is None:
        return None
    domain = as_domain(value if not isinstance(value, list) else tuple(value))
    return json.dumps(domain.to_json())


def read(path: str | Path, options: Mapping[str, object]) -> TensorData:
    """Read and validate a tensor file with its options (``domain``, ``test_fraction``,
    ``data_seed``); the last two files read are cached while unchanged on disk."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise DataError(
            f"data file {source} does not exist; give a .npz, .safetensors or .pt file holding "
            f"x and y"
        )
    stat = source.stat()
    domain_text = domain_option(options.get("domain"))
    tensors, domain, names = _read_cached(
        source.resolve(), (stat.st_mtime_ns, stat.st_size), domain_text
    )
    if "x_test" in tensors:
        x_train, y_train = tensors["x"], tensors["y"]
        x_test, y_test, has_test = tensors["x_test"], tensors["y_test"], True
    else:
        train_idx, test_idx = seeded_split(
            tensors["x"].shape[0], test_fraction_option(options), seed_option(options)
        )
        x_train, y_train = tensors["x"][train_idx], tensors["y"][train_idx]
        x_test, y_test, has_test = tensors["x"][test_idx], tensors["y"][test_idx], False
    return TensorData(source, x_train, y_train, x_test, y_test, domain, names, has_test)
