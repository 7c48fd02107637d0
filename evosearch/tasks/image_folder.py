"""``image_folder``: a class-per-folder image tree, converted once into a compact ``.npz`` file.

Decoding and resizing image files on every proxy run would cost more than the training itself, so
``evosearch data prepare`` does it once: each image is centre-cropped to a square, resized, and stored
as uint8 CHW together with its label and the class names (the sorted folder names). The file holds
plain arrays only, so reading it back never involves pickle. Pillow is needed to prepare a file, not to
read one: it is the optional ``images`` extra and is imported only here, only when used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evosearch.errors import DatasetError

FORMAT_VERSION = 1
KEYS = ("format_version", "class_names", "train_images", "train_labels", "val_images", "val_labels")
IMAGE_SUFFIXES = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class PreparedSummary:
    """What ``prepare_image_folder`` wrote: where, at what resolution, and how many of each."""

    path: str
    size: int
    classes: int
    train: int
    val: int
    bytes: int
    format_version: int = FORMAT_VERSION


def prepare_image_folder(
    src: str | Path, out: str | Path, *, size: int = 32, val_fraction: float = 0.1, seed: int = 0
) -> PreparedSummary:
    """Convert ``src/<class>/<images>`` into one ``.npz`` at ``out``, split per class into train and
    validation (``val_fraction`` of each class, drawn with ``seed``), written atomically."""
    if size < 1:
        raise DatasetError(f"--size must be at least 1, got {size}")
    if not 0 < val_fraction < 1:
        raise DatasetError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    files = _class_files(Path(src))
    train, val = _split(list(files.values()), val_fraction, seed)
    if not val:
        raise DatasetError(f"too few images in {src} for a validation split: every class has only one")
    arrays = {
        "format_version": np.array(FORMAT_VERSION),
        "class_names": np.array(list(files)),
        "train_images": _read_images([path for path, _ in train], size),
        "train_labels": np.array([label for _, label in train], dtype=np.int64),
        "val_images": _read_images([path for path, _ in val], size),
        "val_labels": np.array([label for _, label in val], dtype=np.int64),
    }
    out = Path(out)
    _save_atomic(out, arrays)
    return PreparedSummary(str(out), size, len(files), len(train), len(val), out.stat().st_size)


def _class_files(src: Path) -> dict[str, list[Path]]:
    """Sorted class folder name → its image files (searched recursively, sorted)."""
    layout = f"expected {src}/<class name>/<image files> ({', '.join(sorted(IMAGE_SUFFIXES))})"
    if not src.is_dir():
        raise DatasetError(f"image folder not found: {src} is not a directory; {layout}")
    folders = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"no class folders in {src}; {layout}")
    files = {folder.name: _image_files(folder) for folder in folders}
    empty = [name for name, paths in files.items() if not paths]
    if empty:
        raise DatasetError(f"class folder(s) with no images in {src}: {', '.join(empty)}; {layout}")
    return files


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _split(
    classes: list[list[Path]], val_fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Stratified split: every class with two or more images gives at least one to validation."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label, paths in enumerate(classes):
        order = rng.permutation(len(paths))
        n_val = min(len(paths) - 1, max(1, round(len(paths) * val_fraction)))
        val += [(paths[i], label) for i in order[:n_val]]
        train += [(paths[i], label) for i in order[n_val:]]
    return train, val


def _read_images(paths: list[Path], size: int) -> np.ndarray:
    image_lib, image_ops = _pillow()
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with image_lib.open(path) as image:
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, still >= size
                square = image_ops.fit(image.convert("RGB"), (size, size))  # centre crop, bicubic
        except (OSError, ValueError, image_lib.DecompressionBombError) as e:
            raise DatasetError(f"cannot read image {path}: {e}; remove or replace it") from None
        out[i] = np.asarray(square).transpose(2, 0, 1)
    return out


def _pillow():
    """Pillow's ``Image`` and ``ImageOps`` modules, or a one-line hint how to install them."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise DatasetError(
            "preparing an image folder needs Pillow: pip install 'evosearch[images]' (or pip install pillow)"
        ) from None
    return Image, ImageOps


def _save_atomic(out: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write to a temporary file beside ``out``, then rename: a crash never leaves half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
