"""CIFAR augmentation: shapes, determinism, flips, crop geometry, offset distribution."""

from __future__ import annotations

import pytest
import torch

from fedmtl_hpc.models.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    augment_cifar,
    crop_at,
    normalize,
    random_crop,
    random_hflip,
    sample_crop_offsets,
)

torch.set_num_threads(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unique_images(batch: int = 6, channels: int = 3, side: int = 32) -> torch.Tensor:
    """Every pixel distinct and > 0, so a value pins down its source position."""
    n = batch * channels * side * side
    return (torch.arange(n, dtype=torch.float32) + 1).view(batch, channels, side, side)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_shapes_and_dtype_preserved(dtype: torch.dtype) -> None:
    x = torch.randint(0, 255, (5, 3, 32, 32)).to(dtype)
    out = augment_cifar(x, _gen(0))
    assert out.shape == x.shape and out.dtype == dtype


def test_same_generator_state_same_output() -> None:
    x = torch.rand(8, 3, 32, 32)
    before = x.clone()
    a, b = augment_cifar(x, _gen(7)), augment_cifar(x, _gen(7))
    assert torch.equal(x, before)  # input untouched
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_cifar(x, _gen(8)))


def test_flip_forced_on_and_off() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x[:, :, :, 0] = 1.0  # left column lit: asymmetric
    flipped = random_hflip(x, _gen(0), p=1.0)
    assert torch.equal(flipped[:, :, :, 3], torch.ones(2, 1, 4))
    assert flipped[:, :, :, :3].abs().sum() == 0
    assert torch.equal(random_hflip(x, _gen(0), p=0.0), x)


def test_flip_is_per_sample() -> None:
    x = _unique_images(batch=64, channels=1, side=4)
    out = random_hflip(x, _gen(1), p=0.5)
    flipped = (out == x.flip(-1)).flatten(1).all(dim=1)
    kept = (out == x).flatten(1).all(dim=1)
    assert bool((flipped ^ kept).all())  # each sample is exactly one of the two
    assert 10 < int(flipped.sum()) < 54


def test_crop_at_geometry() -> None:
    x = _unique_images(batch=3)
    dy, dx = torch.tensor([0, 4, 8]), torch.tensor([8, 4, 0])
    out = crop_at(x, dy, dx, padding=4)
    assert torch.equal(out[1], x[1])  # offset == padding: no shift
    # Sample 0 moved down-left: the first 4 rows and last 4 columns are padding.
    assert out[0, :, :4].abs().sum() == 0 and out[0, :, :, 28:].abs().sum() == 0
    assert torch.equal(out[0, :, 4:, :28], x[0, :, :28, 4:])
    assert torch.equal(out[2, :, :28, 4:], x[2, :, 4:, :28])


def test_random_crop_uses_drawn_offsets_within_bounds() -> None:
    x = _unique_images(batch=16)
    out = random_crop(x, _gen(3), padding=4)
    dy, dx = sample_crop_offsets(16, _gen(3), padding=4)
    assert torch.equal(out, crop_at(x, dy, dx, padding=4))
    for b in range(16):
        # Locate the source centre pixel in the output: the content shift.
        i, j = (out[b, 0] == x[b, 0, 16, 16]).nonzero()[0].tolist()
        assert -4 <= 16 - i <= 4 and -4 <= 16 - j <= 4
        assert (16 - i, 16 - j) == (int(dy[b]) - 4, int(dx[b]) - 4)
        # Everything in the output is either padding or from this sample.
        nonzero = out[b][out[b] != 0]
        assert bool(torch.isin(nonzero, x[b]).all())


def test_offset_distribution_covers_range() -> None:
    dy, dx = sample_crop_offsets(9000, _gen(4), padding=4)
    for d in (dy, dx):
        counts = torch.bincount(d, minlength=9)
        assert counts.numel() == 9 and int(d.min()) == 0 and int(d.max()) == 8
        assert bool(((counts > 850) & (counts < 1150)).all()), counts.tolist()


def test_augment_is_crop_then_flip_on_one_stream() -> None:
    x = torch.rand(4, 3, 32, 32)
    g = _gen(5)
    expected = random_hflip(random_crop(x, g), g)
    assert torch.equal(augment_cifar(x, _gen(5)), expected)


def test_normalize_per_channel() -> None:
    x = torch.rand(2, 3, 5, 5)
    out = normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - CIFAR10_MEAN[c]) / CIFAR10_STD[c])
    with pytest.raises(ValueError, match="expecting"):
        normalize(torch.rand(2, 1, 5, 5), CIFAR10_MEAN, CIFAR10_STD)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="expecting images"):
        random_crop(torch.rand(3, 32, 32), _gen(0))
    with pytest.raises(ValueError, match="p must be"):
        random_hflip(torch.rand(1, 3, 32, 32), _gen(0), p=1.5)
