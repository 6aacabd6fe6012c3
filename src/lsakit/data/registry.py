"""The data set registry: name → description and loader.

Every data set yields ``x`` float32 in [0, 1] (NCHW for images) and ``y`` int64 class indices, the
input convention of the whole toolkit (any normalization belongs inside the model). The paper's
data sets (Khalooei et al., 2022: Moon, MNIST, Fashion-MNIST, CIFAR-10) are registered here.

Options, all keyword-only:

- for every data set (:func:`load_tensors` and :func:`load`): ``limit`` (first ``limit`` samples of
  the split; None = all), ``data_dir`` and ``download`` (where files are looked
  for and whether missing ones are downloaded; accepted and unused for generated data sets, so a
  caller can pass them uniformly);
- for :func:`load` also: ``batch_size`` (128), ``shuffle`` (True for train, False for test),
  ``num_workers`` (0) and ``seed`` (the shuffle order only, never the data);
- for ``mnist``, ``fashion-mnist``, ``cifar10``: ``domain`` (``unit``, the default: every
  perturbation is clipped to [0, 1]; ``unbounded``: the pixels are still in [0, 1] but attacks and
  noises may leave it — no clamping, the paper protocol's convention for MNIST);
- for ``moons``: ``n_samples`` (1500, a third of them test), ``noise`` (0.1), ``data_seed``
  (0: the generator and the train/test split) and ``coordinates`` (``unit``: the isotropic map
  into [0, 1], the default; ``standardized``: per-feature z-scores with the training split's mean
  and standard deviation, unbounded; ``raw``: make_moons' own coordinates, unbounded).

Beside the registered names, three kinds of data of your own work everywhere a name does
(:func:`info`, :func:`domain`, :func:`load_tensors`, :func:`load`; their description, shape and
classes are read from the data):

- ``folder:PATH`` — an image folder, one sub-folder per class (:mod:`lsakit.data.folder`;
  options ``size``, ``mode``, ``test_fraction``, ``data_seed``), domain [0, 1];
- a ``.npz``, ``.safetensors`` or ``.pt`` file holding ``x`` and ``y`` (optionally ``x_test``,
  ``y_test``, ``domain``, ``class_names``; :mod:`lsakit.data.tensor_file`; options ``domain``,
  ``test_fraction``, ``data_seed``), domain from the ``domain`` option, else the file, else [0, 1];
- ``hf:ORG/NAME`` — an image classification data set on the Hugging Face hub, read with the
  ``datasets`` library (``pip install 'lsakit[datasets]'``; :mod:`lsakit.data.hub`; options
  ``revision``, ``config``, ``image_column``, ``label_column``, ``train_split``, ``test_split``,
  ``size``, ``mode``, ``test_fraction``, ``data_seed``), domain [0, 1].

Every data set carries its input domain (:func:`domain`): [0, 1] for the image sets (unless
``domain=unbounded``) and unit moons, unbounded for standardized or raw moons. The trainer, the
CLI and the experiment runner declare it (:func:`lsakit.domain.input_domain`) for the work they
run on the data.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lsakit.data import folder, hub, moons, tensor_file
from lsakit.data.cifar import load_cifar10
from lsakit.data.idx import load_idx_dataset
from lsakit.data.paths import candidate_dirs
from lsakit.data.transforms import Transformed
from lsakit.domain import UNBOUNDED, UNIT, InputDomain, attach_domain
from lsakit.errors import ConfigError
from lsakit.registry import Registry

Split: TypeAlias = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
DEFAULT_BATCH_SIZE = 128


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is, independent of its options.

    ``input_shape`` is one sample's shape (no batch dimension); ``default_model`` is the name, in
    the model registry, of the architecture the paper trains on this data set.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    description: str
    default_model: str
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class _CommonOptions:
    """Options every data set accepts, validated."""

    limit: int | None
    data_dir: Path | None
    download: bool


_Loader: TypeAlias = Callable[
    [Split, _CommonOptions, Mapping[str, object]], tuple[torch.Tensor, torch.Tensor]
]
#: A loader taking a transform of one image (C, H, W) in [0, 1].
_TransformingLoader: TypeAlias = Callable[
    [Split, _CommonOptions, Mapping[str, object], Callable[[torch.Tensor], torch.Tensor]],
    tuple[torch.Tensor, torch.Tensor],
]
#: The input domain of a data set, given its specific options.
_DomainOf: TypeAlias = Callable[[Mapping[str, object]], InputDomain]


def _unit_domain(options: Mapping[str, object]) -> InputDomain:
    return UNIT


#: The ``domain`` option of the image sets: their pixels are always in [0, 1]; the option says
#: whether perturbations stay there (``unit``, the default) or may leave it (``unbounded``: no
#: clamping anywhere — the unclamped convention of the paper protocol, issue 12).
_IMAGE_DOMAINS = {"unit": UNIT, "unbounded": UNBOUNDED}


def _image_domain(options: Mapping[str, object]) -> InputDomain:
    value = options.get("domain", "unit")
    if not isinstance(value, str) or value.strip().lower() not in _IMAGE_DOMAINS:
        raise ConfigError(
            f"data option domain of an image data set must be 'unit' (perturbations stay in "
            f"[0, 1]) or 'unbounded' (they may leave it), got {value!r}"
        )
    return _IMAGE_DOMAINS[value.strip().lower()]


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    load: _Loader
    #: Options specific to this data set, beyond the common ones.
    options: tuple[str, ...] = ()
    domain: _DomainOf = _unit_domain
    #: the description from the options, for data sets read from the user's files
    describe: Callable[[Mapping[str, object]], DatasetInfo] | None = None
    #: a loader that applies a transform to each image while decoding (data sets whose images
    #: differ in size, so that they stack only once transformed)
    load_transformed: _TransformingLoader | None = None

    def info_for(self, options: Mapping[str, object]) -> DatasetInfo:
        return self.info if self.describe is None else self.describe(options)


_COMMON_OPTIONS = ("limit", "data_dir", "download")
_LOADER_OPTIONS = ("batch_size", "shuffle", "num_workers", "seed")
# numpy's RandomState (behind sklearn's random_state) takes seeds in [0, 2**32).
_SEED_BOUND = 2**32


def _int_option(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"data option {name} must be an integer ≥ {minimum}, got {value!r}")
    return value


def _seed_option(value: object, name: str) -> int:
    seed = _int_option(value, name, 0)
    if seed >= _SEED_BOUND:
        raise ConfigError(f"data option {name} must be below 2**32, got {seed!r}")
    return seed


def _bool_option(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"data option {name} must be True or False, got {value!r}")
    return value


def _common_options(options: Mapping[str, object]) -> _CommonOptions:
    limit, data_dir = options.get("limit"), options.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
        raise ConfigError(f"data option data_dir must be a path, got {data_dir!r}")
    return _CommonOptions(
        limit=None if limit is None else _int_option(limit, "limit", 1),
        data_dir=None if data_dir is None else Path(data_dir),
        download=_bool_option(options.get("download", True), "download"),
    )


def _load_moons(
    split: Split, common: _CommonOptions, options: Mapping[str, object]
) -> tuple[torch.Tensor, torch.Tensor]:
    n_samples = _int_option(
        options.get("n_samples", moons.DEFAULT_N_SAMPLES), "n_samples", moons.MIN_N_SAMPLES
    )
    noise = options.get("noise", moons.DEFAULT_NOISE)
    if (
        isinstance(noise, bool)
        or not isinstance(noise, int | float)
        or not math.isfinite(noise)
        or noise < 0
    ):
        raise ConfigError(f"data option noise must be a finite number ≥ 0, got {noise!r}")
    data_seed = _seed_option(options.get("data_seed", moons.DEFAULT_SEED), "data_seed")
    data = moons.make_moons_split(
        n_samples, float(noise), data_seed, coordinates=_moons_coordinates(options)
    )
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    return x[: common.limit], y[: common.limit]


def _moons_coordinates(options: Mapping[str, object]) -> moons.Coordinates:
    value = options.get("coordinates", "unit")
    if value not in moons.COORDINATES:
        raise ConfigError(
            f"data option coordinates must be one of {', '.join(moons.COORDINATES)}, got {value!r}"
        )
    return value


def _moons_domain(options: Mapping[str, object]) -> InputDomain:
    return UNIT if _moons_coordinates(options) == "unit" else UNBOUNDED


def _idx_loader(dataset: str) -> _Loader:
    def load_split(
        split: Split, common: _CommonOptions, options: Mapping[str, object]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dirs = candidate_dirs(dataset, common.data_dir)
        return load_idx_dataset(dataset, split, dirs, download=common.download, limit=common.limit)

    return load_split


def _load_cifar10(
    split: Split, common: _CommonOptions, options: Mapping[str, object]
) -> tuple[torch.Tensor, torch.Tensor]:
    dirs = candidate_dirs("cifar10", common.data_dir)
    return load_cifar10(split, dirs, download=common.download, limit=common.limit)


_DIGITS = tuple(str(d) for d in range(10))
_FASHION = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_CIFAR10 = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_REGISTRY: Registry[_Entry] = Registry(
    "data set",
    {
        "moons": _Entry(
            DatasetInfo(
                name="moons",
                input_shape=(2,),
                num_classes=2,
                description="two interleaving half circles (sklearn make_moons), isotropically "
                "scaled into [0, 1] (coordinates=standardized: z-scores, unbounded); 1000 train / "
                "500 test by default",
                default_model="model_a",
                class_names=("upper moon", "lower moon"),
            ),
            _load_moons,
            options=("n_samples", "noise", "data_seed", "coordinates"),
            domain=_moons_domain,
        ),
        "mnist": _Entry(
            DatasetInfo(
                name="mnist",
                input_shape=(1, 28, 28),
                num_classes=10,
                description="handwritten digits, 28×28 grey; 60000 train / 10000 test",
                default_model="model_b",
                class_names=_DIGITS,
            ),
            _idx_loader("mnist"),
            options=("domain",),
            domain=_image_domain,
        ),
        "fashion-mnist": _Entry(
            DatasetInfo(
                name="fashion-mnist",
                input_shape=(1, 28, 28),
                num_classes=10,
                description="Zalando clothing images, 28×28 grey; 60000 train / 10000 test",
                default_model="model_b",
                class_names=_FASHION,
            ),
            _idx_loader("fashion-mnist"),
            options=("domain",),
            domain=_image_domain,
        ),
        "cifar10": _Entry(
            DatasetInfo(
                name="cifar10",
                input_shape=(3, 32, 32),
                num_classes=10,
                description="natural images, 32×32 RGB, 10 classes; 50000 train / 10000 test",
                default_model="vgg19",
                class_names=_CIFAR10,
            ),
            _load_cifar10,
            options=("domain",),
            domain=_image_domain,
        ),
    },
    key=lambda name: name.strip().lower().replace("_", "-"),
    alternatives="folder:PATH, a .npz/.safetensors/.pt file, or hf:ORG/NAME",
)


def names() -> list[str]:
    """Names of the registered data sets, in registration order.

    Returns:
        The names (``moons``, ``mnist``, ``fashion-mnist``, ``cifar10``); data of the user's
        (``folder:PATH``, tensor files, ``hf:ORG/NAME``) is not listed.
    """
    return _REGISTRY.names()


def is_user_dataset(name: object) -> bool:
    """Whether ``name`` is data of the user's (``folder:PATH``, a tensor file or an
    ``hf:ORG/NAME`` hub data set), not a registered name — no preset, no default model. Decided
    from the name alone, without reading anything.

    Args:
        name: a data set name, as given (any object: a non-string is not a user data set).

    Returns:
        True for ``folder:PATH``, a ``.npz``/``.safetensors``/``.pt`` file name or
        ``hf:ORG/NAME``; False otherwise (registered, unknown or not a string).
    """
    return isinstance(name, str) and (
        name.strip().startswith(folder.PREFIX)
        or tensor_file.is_tensor_file(name)
        or hub.is_hub_name(name)
    )


def _folder_entry(name: str) -> _Entry:
    root = folder.root_of(name)

    def load_split(
        split: Split, common: _CommonOptions, options: Mapping[str, object]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return folder.load_folder(root, split, folder.parse_options(options), common.limit)

    def describe(options: Mapping[str, object]) -> DatasetInfo:
        parsed = folder.parse_options(options)
        classes = folder.class_names(root)
        shape = folder.input_shape(root, parsed)
        counts = {split: len(folder.samples(root, split, parsed)) for split in SPLITS}
        return DatasetInfo(
            name=name,
            input_shape=shape,
            num_classes=len(classes),
            description=f"image folder {root}: {len(classes)} classes, {counts['train']} train / "
            f"{counts['test']} test, {'×'.join(map(str, shape))} ({parsed.mode})",
            default_model="",
            class_names=classes,
        )

    return _Entry(_placeholder(name), load_split, folder.OPTIONS, _unit_domain, describe)


def _tensor_file_entry(name: str) -> _Entry:
    path = name.strip()

    def load_split(
        split: Split, common: _CommonOptions, options: Mapping[str, object]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        read = tensor_file.read(path, options)
        x, y = (read.x_train, read.y_train) if split == "train" else (read.x_test, read.y_test)
        return x[: common.limit], y[: common.limit]

    def describe(options: Mapping[str, object]) -> DatasetInfo:
        read = tensor_file.read(path, options)
        shape = "×".join(map(str, read.input_shape))
        split = "" if read.has_test else " (seeded split)"
        return DatasetInfo(
            name=name,
            input_shape=read.input_shape,
            num_classes=read.num_classes,
            description=f"tensor file {read.path}: {read.num_classes} classes, "
            f"{len(read.y_train)} train / {len(read.y_test)} test{split}, {shape}, domain "
            f"{read.domain.describe()}",
            default_model="",
            class_names=read.class_names,
        )

    def domain_of(options: Mapping[str, object]) -> InputDomain:
        return tensor_file.read(path, options).domain

    return _Entry(_placeholder(name), load_split, tensor_file.OPTIONS, domain_of, describe)


def _hub_entry(name: str) -> _Entry:
    hub.repo_of(name)  # a malformed repo id fails here, before any network

    def load_split(
        split: Split, common: _CommonOptions, options: Mapping[str, object]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # data_dir and download are unused: the Hugging Face caches and HF_HUB_OFFLINE govern.
        return hub.load_hub(name, split, options, common.limit)

    def load_transformed(
        split: Split,
        common: _CommonOptions,
        options: Mapping[str, object],
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return hub.load_hub(name, split, options, common.limit, image_transform=transform)

    def describe(options: Mapping[str, object]) -> DatasetInfo:
        described = hub.describe(name, options)
        return DatasetInfo(
            name=name,
            input_shape=described.input_shape,
            num_classes=len(described.class_names),
            description=described.description,
            default_model="",
            class_names=described.class_names,
        )

    return _Entry(
        _placeholder(name), load_split, hub.OPTIONS, _unit_domain, describe, load_transformed
    )


def _placeholder(name: str) -> DatasetInfo:
    """The static info of a user data set: its name only (the rest comes from ``describe``)."""
    return DatasetInfo(name, (), 0, "", "", ())


def _entry(name: object) -> _Entry:
    if not isinstance(name, str):
        raise _REGISTRY.unknown(name)
    if name.strip().startswith(folder.PREFIX):
        return _folder_entry(name)
    if hub.is_hub_name(name):  # before the suffix test: a repo id may end in .pt
        return _hub_entry(name)
    if tensor_file.is_tensor_file(name):
        return _tensor_file_entry(name)
    return _REGISTRY.get(name)


def info(name: str, **options: object) -> DatasetInfo:
    """The description of data set ``name``; unknown names raise ConfigError.

    For a data set of the user's (folder, tensor file, hf:) it is read from the data, with the same
    options as :func:`load` (``size``/``mode`` change the input shape); registered data sets
    accept their own options, which do not change their description.

    Args:
        name: a registered name or data of the user's (see the module docstring).
        options: any option :func:`load` accepts for this data set; an unknown one raises
            ConfigError.

    Returns:
        Its name, one sample's input shape, number and names of classes, description and the
        default model (``""`` for data of the user's).
    """
    entry = _entry(name)
    _check_option_names(entry.info.name, options, _COMMON_OPTIONS + entry.options + _LOADER_OPTIONS)
    return entry.info_for({k: v for k, v in options.items() if k in entry.options})


def domain(name: str, **options: object) -> InputDomain:
    """The input domain of data set ``name`` with these options ([0, 1] for every image set).

    Accepts the same options as :func:`load` (the ones that do not change the domain are ignored).

    Args:
        name: a registered name or data of the user's (see the module docstring).
        options: any option :func:`load` accepts for this data set (those deciding the domain:
            ``domain`` of the image sets and tensor files, ``coordinates`` of moons).

    Returns:
        The input domain: [0, 1], or unbounded (``domain=unbounded`` image sets, standardized
        or raw moons), or a tensor file's own.
    """
    entry = _entry(name)
    _check_option_names(entry.info.name, options, _COMMON_OPTIONS + entry.options + _LOADER_OPTIONS)
    return entry.domain({k: v for k, v in options.items() if k in entry.options})


def _check_split(split: object) -> Split:
    if split == "train":
        return "train"
    if split == "test":
        return "test"
    raise ConfigError(f"unknown split {split!r}; use 'train' or 'test'")


def _check_option_names(name: str, given: Mapping[str, object], valid: tuple[str, ...]) -> None:
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown option {key!r} for data set {name!r}{hint} "
                f"(valid: {', '.join(sorted(valid))})"
            )


#: a model's input transform (lsakit.models.Preprocessing.transform): a batch (N, C, H, W) in
#: [0, 1] → the model's input size, still in [0, 1]
Transform: TypeAlias = Callable[[torch.Tensor], torch.Tensor]


def load_tensors(
    name: str, split: str = "train", *, transform: Transform | None = None, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split of data set ``name`` as ``(x, y)``: x float32 in [0, 1], y int64.

    ``transform`` (a pretrained model's input transform) is applied to every image: while
    decoding where the images differ in size (``hf:`` data sets), else to the loaded tensor,
    256 samples at a time. See the module docstring for the options. Raises ConfigError for an
    unknown name, split or option, DataError for missing (with ``download=False`` or a failed
    download) or corrupt files.

    Args:
        name: a registered name or data of the user's (see the module docstring).
        split: ``train`` or ``test``.
        transform: a batch transform ``(N, C, H, W)`` in [0, 1] → the model's input size, still
            in [0, 1]; None: the samples as stored.
        options: the data set's options and the common ones (``limit``, ``data_dir``,
            ``download``); the loader options of :func:`load` are refused here.

    Returns:
        ``(x, y)``: ``x`` float32 ``(N, ...)`` (NCHW for images) within the data set's domain
        (:func:`domain`; [0, 1] unless it is unbounded), ``y`` int64 class indices ``(N,)``.
    """
    entry = _entry(name)
    _check_option_names(entry.info.name, options, _COMMON_OPTIONS + entry.options)
    specific = {key: value for key, value in options.items() if key in entry.options}
    common = _common_options(options)
    if transform is not None and entry.load_transformed is not None:
        one = _per_image(transform)
        return entry.load_transformed(_check_split(split), common, specific, one)
    x, y = entry.load(_check_split(split), common, specific)
    if transform is not None:
        x = torch.cat([transform(x[i : i + 256]) for i in range(0, len(x), 256)]) if len(x) else x
    return x, y


def _per_image(transform: Transform) -> Transform:
    """A batch transform as a transform of one image (C, H, W)."""
    return lambda image: transform(image.unsqueeze(0)).squeeze(0)


def load(
    name: str, split: str = "train", *, transform: Transform | None = None, **options: object
) -> DataLoader[tuple[torch.Tensor, ...]]:
    """A DataLoader over the split of data set ``name``, built on :func:`load_tensors`.

    Batches are ``(x, y)``. ``seed`` (if given) fixes the shuffle order only; the data itself
    never depends on it (moons takes ``data_seed``), so runs with different seeds see the same data.
    ``transform`` (a pretrained model's input transform) is applied to each sample as it is read,
    so the split is never held in memory at the model's input size (while decoding, for ``hf:``
    data sets). See the module docstring for the other options.

    Args:
        name: a registered name or data of the user's (see the module docstring).
        split: ``train`` or ``test``; it also sets the default of ``shuffle``.
        transform: a batch transform ``(N, C, H, W)`` in [0, 1] → the model's input size, still
            in [0, 1]; None: the samples as stored.
        options: the data set's options, the common ones (``limit``, ``data_dir``,
            ``download``) and the loader's (``batch_size``, ``shuffle``, ``num_workers``,
            ``seed``).

    Returns:
        A DataLoader of ``(x, y)`` batches (as :func:`load_tensors` gives them) that carries the
        data set's input domain (:func:`lsakit.domain.attach_domain`).
    """
    entry = _entry(name)
    _check_option_names(entry.info.name, options, _COMMON_OPTIONS + entry.options + _LOADER_OPTIONS)
    checked_split = _check_split(split)
    # Checked before the data is read, so a typo fails at once rather than after a download.
    batch_size = _int_option(options.pop("batch_size", DEFAULT_BATCH_SIZE), "batch_size", 1)
    shuffle = _bool_option(options.pop("shuffle", checked_split == "train"), "shuffle")
    num_workers = _int_option(options.pop("num_workers", 0), "num_workers", 0)
    seed = options.pop("seed", None)
    seed = None if seed is None else _seed_option(seed, "seed")
    decoded = transform is not None and entry.load_transformed is not None
    x, y = load_tensors(
        entry.info.name, checked_split, transform=transform if decoded else None, **options
    )
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    dataset: Dataset[Any] = TensorDataset(x, y)
    if transform is not None and not decoded:
        dataset = Transformed(dataset, transform)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
    )
    # The loader carries the data set's domain: analyze() / evaluate() declare it for their work.
    return attach_domain(
        loader, entry.domain({k: options[k] for k in entry.options if k in options})
    )
