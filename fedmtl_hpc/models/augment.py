"""Batched, seeded CIFAR data augmentation and per-channel normalisation.

The standard CIFAR training augmentation (He et al., CVPR 2016, section 4.2;
torchvision ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip(0.5)``),
done on a whole batch tensor at once on any device: no per-sample Python loop,
no PIL, no torchvision. Randomness comes only from the ``torch.Generator``
passed in, so the same generator state gives the same output (the engine keeps
and checkpoints that generator). FedEM (omarfoq/FedEM ``datasets.py``) trains
CIFAR without augmentation; use of this module is a config choice.

Order of random draws per call of :func:`augment_cifar` (fixed, part of the
reproducibility contract): crop row offsets ``[B]``, crop column offsets ``[B]``,
flip uniforms ``[B]``. Draws happen on the generator's device; results are
moved to the images' device.

Apply augmentation to images in ``[0, 1]`` and normalise afterwards, as the
torchvision pipeline does (zero padding means black pixels, not the mean).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "FEDEM_CIFAR_MEAN",
    "FEDEM_CIFAR_STD",
    "sample_crop_offsets",
    "crop_at",
    "random_crop",
    "random_hflip",
    "augment_cifar",
    "normalize",
]

# Per-channel mean and standard deviation of the training images in [0, 1]
# (computed over all 50,000 training pixels per channel).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4865, 0.4409)
CIFAR100_STD: tuple[float, float, float] = (0.2673, 0.2564, 0.2762)
# FedEM normalises CIFAR-10 and CIFAR-100 alike with these; the std is a
# widespread but inexact CIFAR-10 figure. Kept only to reproduce FedEM.
FEDEM_CIFAR_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
FEDEM_CIFAR_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)


def _check_batch(images: torch.Tensor) -> None:
    """Images must be ``[B, C, H, W]``."""
    if images.dim() != 4:
        raise ValueError(f"expecting images of shape [B, C, H, W], got {tuple(images.shape)}")


def sample_crop_offsets(
    batch: int, generator: torch.Generator, padding: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw per-sample crop offsets, each uniform on ``{0, ..., 2 * padding}``.

    Returns (row offsets, column offsets), int64 ``[batch]`` on the generator's
    device. Offset ``padding`` means no shift.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    high = 2 * padding + 1
    dy = torch.randint(0, high, (batch,), generator=generator, device=generator.device)
    dx = torch.randint(0, high, (batch,), generator=generator, device=generator.device)
    return dy, dx


def crop_at(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Zero-pad by ``padding`` and cut an ``H x W`` window at ``(dy[b], dx[b])`` per sample.

    Output pixel ``(i, j)`` of sample ``b`` is input pixel
    ``(i + dy[b] - padding, j + dx[b] - padding)``, or 0 outside the image.
    """
    _check_batch(images)
    batch, _, height, width = images.shape
    dy = dy.to(device=images.device, dtype=torch.long)
    dx = dx.to(device=images.device, dtype=torch.long)
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(height, device=images.device)  # [B, H]
    cols = dx[:, None] + torch.arange(width, device=images.device)  # [B, W]
    b_idx = torch.arange(batch, device=images.device)[:, None, None]
    # One gather for the whole batch; advanced indices around the channel slice
    # put the broadcast dims first: [B, H, W, C].
    out = padded[b_idx, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random ``H x W`` crop of the zero-padded images, independent offsets per sample."""
    _check_batch(images)
    dy, dx = sample_crop_offsets(images.shape[0], generator, padding)
    return crop_at(images, dy, dx, padding)


def random_hflip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (one uniform draw per sample)."""
    _check_batch(images)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    u = torch.rand(images.shape[0], generator=generator, device=generator.device)
    flip = (u < p).to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def augment_cifar(
    images: torch.Tensor, generator: torch.Generator, padding: int = 4, flip_p: float = 0.5
) -> torch.Tensor:
    """Random crop with zero padding, then random horizontal flip; shape is preserved."""
    return random_hflip(random_crop(images, generator, padding), generator, flip_p)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` for ``[..., C, H, W]`` float images (out of place)."""
    if images.dim() < 3 or images.shape[-3] != len(mean) or len(mean) != len(std):
        raise ValueError(
            f"expecting [..., {len(mean)}, H, W] images and equal-length mean/std, "
            f"got shape {tuple(images.shape)}, {len(mean)} means, {len(std)} stds"
        )
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device)[:, None, None]
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device)[:, None, None]
    return (images - mean_t) / std_t
