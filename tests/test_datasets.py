"""Dataset readers on tiny files written in the real formats, refusal of malformed and malicious files,
the ``data prepare`` command, and the determinism of ``generated``."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import re
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from evosearch.cli import main
from evosearch.config import ConfigError, from_dict
from evosearch.errors import DatasetError
from evosearch.tasks import image_folder
from evosearch.tasks.datasets import LOADERS, DatasetConfig, ImageData, _NumpyOnlyUnpickler, load_dataset

PER_BATCH = 4  # images per CIFAR batch file; the real files have 10000


def cifar_arrays(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(data N×3072 uint8, labels) for data_batch_1..5 then test_batch."""
    rng = np.random.default_rng(seed)
    return [
        (rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8), rng.integers(0, 10, PER_BATCH))
        for _ in range(6)
    ]


def cifar_names(suffix: str = "") -> list[str]:
    return [f"data_batch_{i}{suffix}" for i in range(1, 6)] + [f"test_batch{suffix}"]


def write_cifar_python(root: Path, protocol: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pickled dicts with bytes keys and numpy arrays, like the files torchvision downloads."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    arrays = cifar_arrays()
    for name, (data, labels) in zip(cifar_names(), arrays, strict=True):
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(label) for label in labels],
            b"data": data,
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return arrays


def write_cifar_binary(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    arrays = cifar_arrays()
    for name, (data, labels) in zip(cifar_names(".bin"), arrays, strict=True):
        records = np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1)
        (folder / name).write_bytes(records.tobytes())
    return arrays


def expected(arrays: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    train_x = np.concatenate([d for d, _ in arrays[:5]]).reshape(-1, 3, 32, 32)
    train_y = np.concatenate([y for _, y in arrays[:5]])
    val_x, val_y = arrays[5][0].reshape(-1, 3, 32, 32), arrays[5][1]
    return tuple(
        torch.from_numpy(a) for a in (train_x, train_y.astype(np.int64), val_x, val_y.astype(np.int64))
    )


def assert_data(data: ImageData, train_x, train_y, val_x, val_y) -> None:
    assert data.train_images.dtype == data.val_images.dtype == torch.uint8
    assert data.train_labels.dtype == data.val_labels.dtype == torch.int64
    assert torch.equal(data.train_images, train_x) and torch.equal(data.train_labels, train_y)
    assert torch.equal(data.val_images, val_x) and torch.equal(data.val_labels, val_y)
    scaled = train_x.double() / 255
    assert data.mean == pytest.approx(scaled.mean((0, 2, 3)).tolist())
    assert data.std == pytest.approx(scaled.std((0, 2, 3), unbiased=False).tolist())


def load(name: str, path: Path | None = None, **kwargs) -> ImageData:
    return load_dataset(DatasetConfig(name=name, path=None if path is None else str(path), **kwargs))


# ------------------------------------------------------------------------------------------ cifar10


@pytest.mark.parametrize("protocol", [2, 4, 5])  # 2 as the Python 2 era files; 4 and 5 as re-saved
def test_cifar10_python_batches(tmp_path, protocol):
    arrays = write_cifar_python(tmp_path, protocol)
    data = load("cifar10", tmp_path)
    assert_data(data, *expected(arrays))
    assert data.name == "cifar10" and data.num_classes == 10 and data.class_names[0] == "airplane"
    assert data.image_size == 32


def test_cifar10_path_may_be_the_extracted_folder(tmp_path):
    arrays = write_cifar_python(tmp_path)
    assert_data(load("cifar10", tmp_path / "cifar-10-batches-py"), *expected(arrays))


def test_cifar10_binary_batches(tmp_path):
    arrays = write_cifar_binary(tmp_path)
    assert_data(load("cifar10", tmp_path), *expected(arrays))
    assert_data(load("cifar10", tmp_path / "cifar-10-batches-bin"), *expected(arrays))


def test_cifar10_truncated_binary_batch_names_file_and_sizes(tmp_path):
    write_cifar_binary(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError) as e:
        load("cifar10", tmp_path)
    message = str(e.value)
    assert str(path) in message and "truncated" in message
    assert "3073" in message and f"got {PER_BATCH * 3073 - 100} bytes" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message


def test_cifar10_truncated_pickle_is_refused(tmp_path):
    write_cifar_python(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError, match="not a valid CIFAR-10 python batch") as e:
        load("cifar10", tmp_path)
    assert str(path) in str(e.value)


class RunsCode:
    """Unpickling this object would call ``function(argument)``."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("payload_name", ["os.system", "builtins.exec"])
def test_cifar10_pickle_that_would_run_code_is_refused(tmp_path, payload_name):
    write_cifar_python(tmp_path)
    marker = tmp_path / "pwned"
    payload = {
        "os.system": RunsCode(os.system, f"echo pwned > {marker}"),
        "builtins.exec": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').write('pwned')"),
    }[payload_name]
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch = {b"labels": [0] * PER_BATCH, b"data": payload}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match="refused") as e:
        load("cifar10", tmp_path)
    assert str(path) in str(e.value)
    assert ".system" in str(e.value) or ".exec" in str(e.value)
    assert not marker.exists()


def test_unpickler_accepts_the_python2_era_numpy_module_name():
    unpickler = _NumpyOnlyUnpickler(io.BytesIO())
    assert callable(unpickler.find_class("numpy.core.multiarray", "_reconstruct"))


def test_cifar10_bad_labels_are_refused(tmp_path):
    write_cifar_binary(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    raw = bytearray(path.read_bytes())
    raw[0] = 42
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"labels must lie in 0\.\.9, found \d+\.\.42"):
        load("cifar10", tmp_path)


def test_cifar10_missing_folder_and_missing_batch(tmp_path):
    with pytest.raises(DatasetError) as e:
        load("cifar10", tmp_path / "nowhere")
    message = str(e.value)
    assert message.startswith(f"CIFAR-10 not found under {tmp_path / 'nowhere'}")
    assert "cifar-10-batches-py/" in message and "cifar-10-batches-bin/" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message

    write_cifar_python(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"CIFAR-10 batch missing: .*data_batch_3"):
        load("cifar10", tmp_path)


def test_cifar10_class_subset_and_caps(tmp_path):
    write_cifar_python(tmp_path)
    full = load("cifar10", tmp_path)
    subset = load("cifar10", tmp_path, classes=3)
    assert subset.num_classes == 3 and subset.class_names == ("airplane", "automobile", "bird")
    assert torch.equal(subset.train_labels, full.train_labels[full.train_labels < 3])
    assert torch.equal(subset.train_images, full.train_images[full.train_labels < 3])

    capped = load("cifar10", tmp_path, train_size=7, val_size=2, seed=1)
    assert len(capped.train_labels) == 7 and len(capped.val_labels) == 2
    flat = full.train_images.flatten(1)
    assert all((flat == image.flatten()).all(1).any() for image in capped.train_images)
    again = load("cifar10", tmp_path, train_size=7, val_size=2, seed=1)
    assert torch.equal(capped.train_images, again.train_images)

    with pytest.raises(DatasetError, match=r"dataset\.classes is 11, but cifar10 has 10 classes"):
        load("cifar10", tmp_path, classes=11)


# ------------------------------------------------------------------------------- imagenet32 / 64


def write_imagenet(root: Path, size: int = 32, per_batch: int = 6) -> tuple[np.ndarray, ...]:
    """Batches as the npz downloads extract: train and val in their own subdirectories."""
    rng = np.random.default_rng(size)
    train_dir, val_dir = root / f"Imagenet{size}_train_npz", root / f"Imagenet{size}_val_npz"
    train_dir.mkdir(parents=True)
    val_dir.mkdir()
    batches = []
    for i in range(1, 11):
        data = rng.integers(0, 256, (per_batch, 3 * size * size), dtype=np.uint8)
        labels = rng.integers(1, 5, per_batch)  # 1-based, only the first four classes occur
        np.savez(train_dir / f"train_data_batch_{i}.npz", data=data, labels=labels, mean=data.mean(0))
        batches.append((data, labels))
    val_data = rng.integers(0, 256, (per_batch, 3 * size * size), dtype=np.uint8)
    val_labels = rng.integers(1, 5, per_batch)
    np.savez(val_dir / "val_data.npz", data=val_data, labels=val_labels)
    train_x = np.concatenate([d for d, _ in batches]).reshape(-1, 3, size, size)
    train_y = np.concatenate([y for _, y in batches]) - 1
    return train_x, train_y, val_data.reshape(-1, 3, size, size), val_labels - 1


@pytest.mark.parametrize("size", [32, 64])
def test_imagenet_batches(tmp_path, size):
    arrays = write_imagenet(tmp_path, size)
    data = load(f"imagenet{size}", tmp_path)
    assert_data(data, *(torch.from_numpy(a.astype(np.uint8 if a.ndim == 4 else np.int64)) for a in arrays))
    assert data.num_classes == 1000 and data.image_size == size


def test_imagenet_class_subset(tmp_path):
    train_x, train_y, _, val_y = write_imagenet(tmp_path)
    data = load("imagenet32", tmp_path, classes=2)
    assert data.num_classes == 2 and data.class_names == ("1", "2")
    keep = train_y < 2
    assert torch.equal(data.train_images, torch.from_numpy(train_x[keep]))
    assert torch.equal(data.train_labels, torch.from_numpy(train_y[keep]))
    assert torch.equal(data.val_labels, torch.from_numpy(val_y[val_y < 2]))


def test_imagenet_missing_wrong_size_truncated_and_pickled(tmp_path):
    with pytest.raises(
        DatasetError, match=r"ImageNet32 not found under .*: expected train_data_batch_1\.npz"
    ):
        load("imagenet32", tmp_path)
    write_imagenet(tmp_path)
    with pytest.raises(DatasetError, match=r"expected images as a uint8 array of N×12288 \(64×64 RGB\)"):
        load("imagenet64", tmp_path)  # 32×32 files read as 64×64 ones

    val = tmp_path / "Imagenet32_val_npz" / "val_data.npz"
    val.write_bytes(val.read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"cannot read .*val_data\.npz as \.npz arrays.*truncated"):
        load("imagenet32", tmp_path)

    np.savez(val, data=np.array([RunsCode(print, "pwned")], dtype=object), labels=np.array([1]))
    with pytest.raises(DatasetError, match=r"cannot read .*val_data\.npz.*allow_pickle"):
        load("imagenet32", tmp_path)

    val.unlink()
    with pytest.raises(DatasetError, match=r"expected val_data\.npz .*download the npz version"):
        load("imagenet32", tmp_path)


# ------------------------------------------------------------------------------------- image_folder


def write_image_tree(root: Path) -> None:
    """Three classes of four images each, in several sizes and modes; ``red`` is a solid colour."""
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for name in ("zebra", "red", "noise"):
        (root / name).mkdir(parents=True)
    for i in range(4):
        pil.new("RGB", (20 + i, 12), (255, 0, 0)).save(root / "red" / f"{i}.png")
        pixels = rng.integers(0, 256, (16, 10 + i, 3), dtype=np.uint8)
        pil.fromarray(pixels).convert("L" if i % 2 else "RGBA").save(root / "noise" / f"{i}.png")
        pil.fromarray(pixels).save(root / "zebra" / f"{i}.jpg")
    (root / "red" / "notes.txt").write_text("not an image")


def test_prepare_and_load_image_folder(tmp_path, capsys):
    write_image_tree(tmp_path / "src")
    out = tmp_path / "prepared" / "tree.npz"
    code = main(["data", "prepare", str(tmp_path / "src"), "--out", str(out), "--size", "8", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["path"] == str(out) and summary["size"] == 8 and summary["classes"] == 3
    assert summary["train"] + summary["val"] == 12 and summary["val"] == 3  # one per class
    assert summary["format_version"] == image_folder.FORMAT_VERSION and summary["bytes"] == out.stat().st_size
    assert [p.name for p in out.parent.iterdir()] == ["tree.npz"]  # no temporary file left behind

    data = load("image_folder", out)
    assert data.class_names == ("noise", "red", "zebra") and data.image_size == 8
    assert len(data.train_labels) == 9 and sorted(data.val_labels.tolist()) == [0, 1, 2]
    red = data.train_images[data.train_labels == 1]
    assert len(red) == 3 and (red[:, 0] == 255).all() and (red[:, 1:] == 0).all()
    assert load("image_folder", out, classes=2).class_names == ("noise", "red")


def test_prepare_table_output_and_errors(tmp_path, capsys):
    write_image_tree(tmp_path / "src")
    out = tmp_path / "tree.npz"
    assert main(["data", "prepare", str(tmp_path / "src"), "--out", str(out), "--size", "4"]) == 0
    assert re.search(r"^classes:\s+3$", capsys.readouterr().out, re.MULTILINE)

    assert main(["data", "prepare", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image folder not found" in err and "<class name>/<image files>" in err

    assert main(["data", "prepare", str(tmp_path / "src"), "--out", str(out), "--val-fraction", "1"]) == 1
    assert "--val-fraction must be between 0 and 1" in capsys.readouterr().err


def test_prepare_without_pillow_says_how_to_install(tmp_path, monkeypatch):
    write_image_tree(tmp_path / "src")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(DatasetError, match=r"needs Pillow: pip install 'evosearch\[images\]'"):
        image_folder.prepare_image_folder(tmp_path / "src", tmp_path / "out.npz")


def test_image_folder_missing_or_unprepared(tmp_path):
    with pytest.raises(
        DatasetError, match=r"missing\.npz not found: .*\(make it with: evosearch data prepare"
    ):
        load("image_folder", tmp_path / "missing.npz")
    np.savez(tmp_path / "raw.npz", images=np.zeros(3))
    with pytest.raises(DatasetError, match=r"lacks the array.*format_version.*evosearch data prepare"):
        load("image_folder", tmp_path / "raw.npz")


# ---------------------------------------------------------------------------------------- generated


def test_generated_is_deterministic():
    a = load("generated", train_size=60, val_size=20, seed=3)
    b = load("generated", train_size=60, val_size=20, seed=3)
    c = load("generated", train_size=60, val_size=20, seed=4)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.train_labels, b.train_labels)
    assert torch.equal(a.val_images, b.val_images) and a.mean == b.mean
    assert not torch.equal(a.train_images, c.train_images)
    assert not torch.equal(a.train_images[:20], a.val_images)
    assert a.train_images.shape == (60, 3, 32, 32) and a.val_images.shape == (20, 3, 32, 32)
    assert a.num_classes == 10 and a.train_images.dtype == torch.uint8


def test_generated_defaults_size_and_classes():
    config = DatasetConfig()
    assert config.name == "generated" and config.path is None
    small = load("generated", train_size=30, val_size=10, classes=3, image_size=16)
    assert small.num_classes == 3 and small.image_size == 16 and small.train_labels.max() == 2
    with pytest.raises(DatasetError, match=r"dataset\.classes is 11, but generated has 10 classes"):
        load("generated", classes=11)


# ------------------------------------------------------------------------------------ configuration


def test_every_dataset_name_has_a_loader():
    names = typing.get_args(typing.get_type_hints(DatasetConfig)["name"])
    assert set(names) == set(LOADERS)


def test_config_is_checked_when_loaded():
    assert from_dict(DatasetConfig, {"name": "cifar10", "path": "/data", "classes": 5}).classes == 5
    with pytest.raises(ConfigError, match="name must be one of"):
        from_dict(DatasetConfig, {"name": "cifar100"})
    with pytest.raises(ConfigError, match="train_size must be at least 1"):
        from_dict(DatasetConfig, {"train_size": 0})


@pytest.mark.parametrize("name", ["cifar10", "imagenet32", "imagenet64", "image_folder"])
def test_datasets_on_disk_need_a_path(name):
    with pytest.raises(DatasetError, match=f"dataset {name} needs dataset.path: "):
        load(name)
