"""Datasets for the proxy tasks, read from disk only: nothing is downloaded at run time.

Every image dataset comes back as the same :class:`ImageData`: uint8 N×3×H×W tensors and int64 labels
for a train and a validation split; the text datasets as :class:`~evosearch.tasks.text.TextData`.
Images stay uint8 in host memory (a quarter of float32); the training loop moves them to the device as
they are and normalizes there with the per-channel ``mean``/``std``.

A missing or malformed dataset raises :class:`DatasetError` with one line: what was expected, where,
and how to get it. Nothing here executes pickled code: CIFAR-10's python batches go through an
unpickler that can only rebuild numpy arrays, and ``.npz`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple

import numpy as np
import torch

from evosearch.errors import DatasetError, brief, one_line
from evosearch.tasks import image_folder
from evosearch.tasks.generated import PATTERNS, generate_images
from evosearch.tasks.text import TextData, generated_text_data, read_text

DatasetName = Literal[
    "generated", "cifar10", "imagenet32", "imagenet64", "image_folder", "generated_text", "text"
]
# Byte-level text for the GPT tasks (:mod:`evosearch.tasks.text`); every other dataset is images.
TEXT_DATASETS = frozenset({"generated_text", "text"})

GENERATED_TRAIN_SIZE = 5000
GENERATED_VAL_SIZE = 1000
GENERATED_TEXT_TRAIN_BYTES = 200_000
GENERATED_TEXT_VAL_BYTES = 20_000
MAX_GENERATED_TEXT_BYTES = 2**26  # generated a line at a time in Python: past this, minutes
MAX_CONTEXT = 8192
# Images smaller than this are not images a network learns from (the generated patterns need 4×4 too).
MIN_IMAGE_SIZE = 4
MAX_IMAGE_SIZE = 1024
# Generated splits are megabytes; past this a setting is a typo of a few zeros, which would otherwise
# show as an allocation failure (or the machine swapping) once training starts.
MAX_GENERATED_BYTES = 16 * 2**30

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32  # binary version: one label byte, then the R, G and B planes

IMAGENET_URL = "https://image-net.org/download-images"
IMAGENET_CLASSES = 1000
IMAGENET_TRAIN_BATCHES = 10


@dataclass
class DatasetConfig:
    """Which dataset, and how much of it.

    ``path``: where the files are (not used by ``generated``): for ``cifar10`` the directory holding
    ``cifar-10-batches-py/`` or ``cifar-10-batches-bin/`` (or one of them); for ``imagenet32``/``64`` the
    directory holding ``train_data_batch_1..10.npz`` and ``val_data.npz`` (or subdirectories holding
    them); for ``image_folder`` the ``.npz`` written by ``evosearch data prepare``.
    ``train_size``/``val_size``: for ``generated`` how many images to make (default 5000 and 1000);
    for the others an optional cap, a random subset drawn with ``seed``.
    ``classes``: keep only the first K classes (relabelled 0..K-1), e.g. 100 of ImageNet's 1000.
    ``seed``: drives generation (``generated``) or the capped subsets (the others).
    ``image_size``: the side of ``generated`` images; the other datasets have their own.

    The text datasets count bytes: ``generated_text`` makes ``train_size`` + ``val_size`` bytes
    (default 200,000 and 20,000) from ``seed``; ``text`` reads the UTF-8 file at ``path`` and keeps its
    last ``val_fraction`` for validation (``train_size``/``val_size`` then cap the splits, each from
    its start). ``context``: the tokens a sequence holds, what the GPT reads.
    """

    name: DatasetName = "generated"
    path: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    classes: int | None = None
    seed: int = 0
    image_size: int = 32
    context: int = 64
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        for key in ("train_size", "val_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be at least 1, got {value}")
        if self.classes is not None and self.classes < 2:
            raise ValueError(f"classes must be at least 2, got {self.classes}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got {self.image_size}"
            )
        if self.name == "generated":
            self._check_generated_size()
        if self.name == "generated_text":
            self._check_generated_text_size()
        if not 1 <= self.context <= MAX_CONTEXT:
            raise ValueError(f"context must be 1 to {MAX_CONTEXT}, got {self.context}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {self.val_fraction}")

    def _check_generated_text_size(self) -> None:
        size = (self.train_size or GENERATED_TEXT_TRAIN_BYTES) + (self.val_size or GENERATED_TEXT_VAL_BYTES)
        if size > MAX_GENERATED_TEXT_BYTES:
            raise ValueError(
                f"train_size and val_size ask for {size} bytes of generated text; "
                f"at most {MAX_GENERATED_TEXT_BYTES}"
            )

    def _check_generated_size(self) -> None:
        images = (self.train_size or GENERATED_TRAIN_SIZE) + (self.val_size or GENERATED_VAL_SIZE)
        size = images * 3 * self.image_size**2
        if size > MAX_GENERATED_BYTES:
            raise ValueError(
                f"train_size and val_size ask for {size / 2**30:.3g} GiB of generated images; "
                f"at most {MAX_GENERATED_BYTES // 2**30} GiB"
            )


@dataclass
class ImageData:
    """A train and a validation split, uint8 images and int64 labels 0..num_classes-1.

    ``mean`` and ``std`` are per channel, computed from the train images on the 0..1 scale, so that
    ``(images / 255 - mean) / std`` normalizes on the device without another pass over the data.
    """

    name: str
    train_images: torch.Tensor = field(repr=False)
    train_labels: torch.Tensor = field(repr=False)
    val_images: torch.Tensor = field(repr=False)
    val_labels: torch.Tensor = field(repr=False)
    class_names: tuple[str, ...]
    # Computed from the train images unless given (a copy of known data need not pass over it again).
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for images, labels in ((self.train_images, self.train_labels), (self.val_images, self.val_labels)):
            if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"images must be uint8 N×3×H×W, got {images.dtype} {tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
                raise ValueError(
                    f"labels must be int64 of length {len(images)}, got {labels.dtype} {labels.shape}"
                )
        if self.mean is None or self.std is None:
            self.mean, self.std = channel_stats(self.train_images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return self.train_images.shape[-1]


def load_dataset(config: DatasetConfig) -> ImageData | TextData:
    """Read (or generate) the dataset ``config`` names; :class:`DatasetError` says what is wrong."""
    return LOADERS[config.name](config)


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images on the 0..1 scale, in float64 chunks so that a
    large dataset never needs a float copy of itself."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].double() / 255
        total += part.sum((0, 2, 3))
        squares += part.square().sum((0, 2, 3))
    count = max(1, images.numel() // images.shape[1])
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


class _Split(NamedTuple):
    images: np.ndarray  # uint8 N×3×H×W
    labels: np.ndarray  # int64 N


# ----------------------------------------------------------------------------------------- generated


def _load_generated(config: DatasetConfig) -> ImageData:
    """Train and validation are independent draws (seeds 2·seed and 2·seed+1), and no two ``seed``
    values share a split."""
    k = _class_count(config, len(PATTERNS))
    train_size = config.train_size or GENERATED_TRAIN_SIZE
    val_size = config.val_size or GENERATED_VAL_SIZE
    try:
        train = generate_images(train_size, 2 * config.seed, size=config.image_size, num_classes=k)
        val = generate_images(val_size, 2 * config.seed + 1, size=config.image_size, num_classes=k)
    except ValueError as e:
        raise DatasetError(f"dataset generated: {e}") from None
    return ImageData("generated", *train, *val, class_names=tuple(PATTERNS)[:k])


# ------------------------------------------------------------------------------------------ cifar10


def _load_cifar10(config: DatasetConfig) -> ImageData:
    root = _require_path(config, "the directory holding cifar-10-batches-py/ or cifar-10-batches-bin/")
    folder = _cifar10_folder(root)
    binary = folder.name == "cifar-10-batches-bin"
    read, suffix = (_read_cifar10_binary, ".bin") if binary else (_read_cifar10_pickle, "")
    train = _concat([read(folder / f"data_batch_{i}{suffix}") for i in range(1, 6)])
    val = read(folder / f"test_batch{suffix}")
    return _finish(config, train, val, CIFAR10_CLASSES)


def _cifar10_folder(root: Path) -> Path:
    """``root`` itself if it is one of the extracted folders, else the folder inside it (python first)."""
    names = ("cifar-10-batches-py", "cifar-10-batches-bin")
    for folder in (root, *(root / name for name in names)):
        if folder.name in names and folder.is_dir():
            return folder
    raise DatasetError(
        f"CIFAR-10 not found under {root}: expected cifar-10-batches-py/ or cifar-10-batches-bin/ "
        f"(download the python or binary version from {CIFAR10_URL} and extract it there)"
    )


def _cifar10_hint(path: Path) -> str:
    version = "binary" if path.suffix == ".bin" else "python"
    return (
        f"download the CIFAR-10 {version} version from {CIFAR10_URL} and extract it in {path.parent.parent}"
    )


def _read_cifar10_pickle(path: Path) -> _Split:
    """One python batch: a pickled dict with ``b'data'`` (N×3072 uint8) and ``b'labels'`` (N ints)."""
    hint = _cifar10_hint(path)
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 batch missing: {path} ({hint})")
    try:
        with path.open("rb") as f:
            batch = _NumpyOnlyUnpickler(f).load()
    # A damaged pickle fails in many ways (and a refused global raises too); each means the file is unusable.
    except Exception as e:
        raise DatasetError(f"{path} is not a valid CIFAR-10 python batch: {one_line(e)} ({hint})") from None
    if not isinstance(batch, dict) or not {b"data", b"labels"} <= batch.keys():
        raise DatasetError(
            f"{path} is not a valid CIFAR-10 python batch: expected a dict with b'data', b'labels' ({hint})"
        )
    images = _unflatten(path, batch[b"data"], 32, hint)
    return _checked_split(path, images, batch[b"labels"], len(CIFAR10_CLASSES), hint)


def _read_cifar10_binary(path: Path) -> _Split:
    """One binary batch: records of one label byte followed by 3072 pixel bytes (R, G, B planes)."""
    hint = _cifar10_hint(path)
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 batch missing: {path} ({hint})")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR10_RECORD_BYTES:
        raise DatasetError(
            f"{path} is truncated or not a CIFAR-10 binary batch: expected a whole number of "
            f"{CIFAR10_RECORD_BYTES}-byte records (a full batch is {10000 * CIFAR10_RECORD_BYTES} bytes), "
            f"got {raw.size} bytes ({hint})"
        )
    records = raw.reshape(-1, CIFAR10_RECORD_BYTES)
    images = _unflatten(path, np.ascontiguousarray(records[:, 1:]), 32, hint)
    return _checked_split(path, images, records[:, 0], len(CIFAR10_CLASSES), hint)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds plain containers and numpy arrays, nothing else: every global a pickle names is looked
    up here, and anything outside this list (``os.system``, ``builtins.eval``, …) is refused before it
    is imported, so a crafted file cannot run code. The list is what real CIFAR-10 batches need
    (``numpy.core`` from Python 2 days), plus what numpy 1/2 write today: ``_codecs.encode`` for bytes
    under pickle protocols 0–2 and ``_frombuffer`` under protocol 5."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),
        }
    )

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 strings (the pixel data) stay bytes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which was refused: a CIFAR-10 batch holds only numpy arrays, "
                "and loading anything else could run code"
            )
        return super().find_class(module, name)


# ------------------------------------------------------------------------------- imagenet32 / 64


def _load_imagenet(config: DatasetConfig, *, size: int) -> ImageData:
    """Downsampled ImageNet (Chrabaszcz et al. 2017): ``.npz`` batches with ``data`` (N×3·S·S uint8,
    R, G and B planes) and 1-based ``labels``. The class subset is applied batch by batch, so a
    100-class subset never holds all 1000 classes in memory."""
    root = _require_path(config, "the directory holding train_data_batch_1..10.npz and val_data.npz")
    k = _class_count(config, IMAGENET_CLASSES)
    names = [f"train_data_batch_{i}.npz" for i in range(1, IMAGENET_TRAIN_BATCHES + 1)]
    train = _concat([_read_imagenet_batch(_find_file(root, name, size), size, k) for name in names])
    val = _read_imagenet_batch(_find_file(root, "val_data.npz", size), size, k)
    return _finish(config, train, val, tuple(str(label) for label in range(1, IMAGENET_CLASSES + 1)))


def _imagenet_hint(size: int) -> str:
    return (
        f"download the npz version of Downsampled ImageNet {size}x{size} (train and val) from "
        f"{IMAGENET_URL} and extract it there"
    )


def _find_file(root: Path, name: str, size: int) -> Path:
    """``root/name``, or ``root/<subdirectory>/name`` as the train and val archives extract."""
    for path in (root / name, *sorted(root.glob(f"*/{name}"))):
        if path.is_file():
            return path
    raise DatasetError(f"ImageNet{size} not found under {root}: expected {name} ({_imagenet_hint(size)})")


def _read_imagenet_batch(path: Path, size: int, k: int) -> _Split:
    hint = _imagenet_hint(size)
    arrays = _read_npz(path, ("data", "labels"), hint)
    images = _unflatten(path, arrays["data"], size, hint)
    split = _checked_split(path, images, arrays["labels"], IMAGENET_CLASSES, hint, first=1)
    return _keep_classes(split, k)


# ------------------------------------------------------------------------------------- image_folder


def _load_image_folder(config: DatasetConfig) -> ImageData:
    """The ``.npz`` file written by ``evosearch data prepare`` (see :mod:`evosearch.tasks.image_folder`)."""
    path = _require_path(config, "the .npz file written by 'evosearch data prepare'")
    hint = f"make it with: evosearch data prepare SRC --out {path}"
    arrays = _read_npz(path, image_folder.KEYS, hint)
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != image_folder.FORMAT_VERSION:
        raise DatasetError(
            f"{path} has format version {brief(version.tolist())}, this evosearch reads version "
            f"{image_folder.FORMAT_VERSION}: {hint}"
        )
    class_names = tuple(str(name) for name in arrays["class_names"])
    train = _checked_split(path, arrays["train_images"], arrays["train_labels"], len(class_names), hint)
    val = _checked_split(path, arrays["val_images"], arrays["val_labels"], len(class_names), hint)
    return _finish(config, train, val, class_names)


# ------------------------------------------------------------------------------------------ helpers


def _require_path(config: DatasetConfig, expected: str) -> Path:
    if config.path is None:
        raise DatasetError(f"dataset {config.name} needs dataset.path: {expected}")
    return Path(config.path).expanduser()


def _read_npz(path: Path, keys: Sequence[str], hint: str) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file, never unpickling anything."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: expected an .npz file there ({hint})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in keys if key in archive.files}
    # A damaged zip or array member fails in many ways; each one means the file is unusable.
    except Exception as e:
        raise DatasetError(
            f"cannot read {path} as .npz arrays ({one_line(e)}); it may be truncated ({hint})"
        ) from None
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise DatasetError(f"{path} lacks the array(s) {', '.join(missing)} ({hint})")
    return arrays


def _unflatten(path: Path, data: Any, size: int, hint: str) -> np.ndarray:
    """N×(3·size·size) uint8 rows (R, G, B planes, row-major) → N×3×size×size, a view."""
    width = 3 * size * size
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != width:
        shape = getattr(data, "shape", None)
        raise DatasetError(
            f"{path}: expected images as a uint8 array of N×{width} ({size}×{size} RGB), "
            f"got {type(data).__name__} {getattr(data, 'dtype', '')} {shape} ({hint})"
        )
    return data.reshape(-1, 3, size, size)


def _checked_split(
    path: Path, images: np.ndarray, labels: Any, num_classes: int, hint: str, first: int = 0
) -> _Split:
    """Images and labels as read, checked against each other; labels shifted to start at 0."""
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise DatasetError(
            f"{path}: expected uint8 N×3×H×W images, got {images.dtype} {images.shape} ({hint})"
        )
    if min(images.shape[2:]) < MIN_IMAGE_SIZE:
        raise DatasetError(
            f"{path}: images of {images.shape[2]}×{images.shape[3]} are too small, at least "
            f"{MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} ({hint})"
        )
    if labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
        raise DatasetError(
            f"{path}: expected {len(images)} integer labels, got {labels.dtype} {labels.shape} ({hint})"
        )
    labels = labels.astype(np.int64) - first
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(
            f"{path}: labels must lie in {first}..{num_classes - 1 + first}, found "
            f"{labels.min() + first}..{labels.max() + first} ({hint})"
        )
    return _Split(images, labels)


def _class_count(config: DatasetConfig, available: int) -> int:
    if config.classes is None:
        return available
    if config.classes > available:
        raise DatasetError(f"dataset.classes is {config.classes}, but {config.name} has {available} classes")
    return config.classes


def _keep_classes(split: _Split, k: int) -> _Split:
    keep = split.labels < k
    return split if keep.all() else _Split(split.images[keep], split.labels[keep])


def _cap(split: _Split, size: int | None, seed: int) -> _Split:
    """At most ``size`` examples: a random subset (in the original order) drawn with ``seed``."""
    if size is None or size >= len(split.labels):
        return split
    index = np.sort(np.random.default_rng(seed).choice(len(split.labels), size, replace=False))
    return _Split(split.images[index], split.labels[index])


def _concat(splits: list[_Split]) -> _Split:
    return _Split(np.concatenate([s.images for s in splits]), np.concatenate([s.labels for s in splits]))


def _finish(config: DatasetConfig, train: _Split, val: _Split, class_names: Sequence[str]) -> ImageData:
    """Apply the class subset and the caps, then hand the arrays to torch without copying them."""
    k = _class_count(config, len(class_names))
    train = _cap(_keep_classes(train, k), config.train_size, config.seed)
    val = _cap(_keep_classes(val, k), config.val_size, config.seed + 1)
    return ImageData(
        config.name,
        torch.from_numpy(np.ascontiguousarray(train.images)),
        torch.from_numpy(train.labels),
        torch.from_numpy(np.ascontiguousarray(val.images)),
        torch.from_numpy(val.labels),
        class_names=tuple(class_names[:k]),
    )


# ---------------------------------------------------------------------------------------------- text


def _load_generated_text(config: DatasetConfig) -> TextData:
    train_size = config.train_size or GENERATED_TEXT_TRAIN_BYTES
    val_size = config.val_size or GENERATED_TEXT_VAL_BYTES
    return generated_text_data(train_size, val_size, config.seed, config.context)


def _load_text(config: DatasetConfig) -> TextData:
    """The UTF-8 file at ``path``, split by position; ``train_size``/``val_size`` cap each split."""
    path = _require_path(config, "a UTF-8 text file")
    data = read_text(path, config.context, config.val_fraction)
    train, val = data.train_tokens[: config.train_size], data.val_tokens[: config.val_size]
    if min(len(train), len(val)) < config.context + 1:
        raise DatasetError(
            f"dataset.train_size and dataset.val_size must be at least context + 1 ({config.context + 1})"
        )
    return TextData(data.name, train, val, config.context)


LOADERS: dict[str, Callable[[DatasetConfig], ImageData | TextData]] = {
    "generated": _load_generated,
    "cifar10": _load_cifar10,
    "imagenet32": functools.partial(_load_imagenet, size=32),
    "imagenet64": functools.partial(_load_imagenet, size=64),
    "image_folder": _load_image_folder,
    "generated_text": _load_generated_text,
    "text": _load_text,
}
