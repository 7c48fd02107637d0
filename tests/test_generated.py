"""The built-in generated dataset: deterministic, balanced, varied, learnable, fast."""

from __future__ import annotations

import time

import pytest
import torch

from evosearch.tasks.generated import PATTERNS, generate_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


def test_shapes_dtypes_and_balanced_labels():
    images, labels = generate_images(250, seed=0, size=32)
    assert images.shape == (250, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (250,) and labels.dtype == torch.int64
    assert labels.bincount().tolist() == [25] * 10
    small, small_labels = generate_images(30, seed=0, size=16, num_classes=3)
    assert small.shape == (30, 3, 16, 16) and set(small_labels.tolist()) == {0, 1, 2}


def test_same_seed_same_bytes_other_seed_other_images():
    a, la = generate_images(64, seed=7)
    b, lb = generate_images(64, seed=7)
    c, _ = generate_images(64, seed=8)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)


def test_images_vary_in_brightness_and_contrast():
    """The nuisances normalization has to remove: per-image means and spreads differ widely."""
    images, _ = generate_images(500, seed=1)
    x = images.float().flatten(1) / 255
    means, stds = x.mean(1), x.std(1)
    assert means.max() - means.min() > 0.5
    assert stds.max() > 2 * stds.median() and stds.min() < stds.median() / 2


def _spectrum(images: torch.Tensor) -> torch.Tensor:
    """A translation-invariant feature: the normalized FFT magnitude of the standardized grey image."""
    grey = images.float().mean(1)
    grey = (grey - grey.mean((1, 2), keepdim=True)) / grey.std((1, 2), keepdim=True).clamp_min(1e-3)
    spectrum = torch.fft.fft2(grey).abs().flatten(1)
    return spectrum / spectrum.norm(dim=1, keepdim=True).clamp_min(1e-6)


def test_labels_carry_the_class():
    """A nearest-centroid classifier on FFT magnitudes is far above chance (0.1) on fresh images."""
    train_images, train_labels = generate_images(2000, seed=1)
    val_images, val_labels = generate_images(500, seed=2)
    train, val = _spectrum(train_images), _spectrum(val_images)
    centroids = torch.stack([train[train_labels == k].mean(0) for k in range(len(PATTERNS))])
    accuracy = (torch.cdist(val, centroids).argmin(1) == val_labels).float().mean()
    assert accuracy > 0.4


def test_a_few_thousand_images_in_about_a_second():
    generate_images(100, seed=0)  # warm-up
    start = time.perf_counter()
    generate_images(3000, seed=0)
    assert time.perf_counter() - start < 5.0  # ~0.25 s when the machine is quiet


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 11}, {"num_classes": 0}, {"count": -1}, {"size": 2}], ids=str
)
def test_bad_arguments_raise(kwargs):
    args = {"count": 4, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        generate_images(**args)
