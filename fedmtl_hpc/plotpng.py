"""A tiny RGB canvas and PNG writer, numpy + zlib only (no matplotlib on clusters).

Coordinates are pixels: x grows right, y grows down, (0, 0) is the top-left
corner; floats are rounded and anything outside the canvas is clipped, so
callers never have to bounds-check. The PNG is 8-bit RGB, non-interlaced, every
row with filter type 0 (PNG spec, ISO/IEC 15948), which any viewer reads.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["Canvas", "Color", "encode_png", "PNG_SIGNATURE"]

Color = tuple[int, int, int]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Canvas:
    """An (height, width, 3) uint8 image with line, circle, rect and save."""

    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"canvas size must be >= 1 x 1, got {width} x {height}")
        self.width, self.height = int(width), int(height)
        self.pixels = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self.pixels[...] = background

    def _plot(self, xs: np.ndarray, ys: np.ndarray, color: Color) -> None:
        """Set the pixels at rounded (xs, ys), dropping those off the canvas."""
        xi, yi = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
        keep = (xi >= 0) & (xi < self.width) & (yi >= 0) & (yi < self.height)
        self.pixels[yi[keep], xi[keep]] = color

    def line(self, x0: float, y0: float, x1: float, y1: float,
             color: Color = (0, 0, 0), width: int = 1) -> None:
        """Straight segment from (x0, y0) to (x1, y1), ``width`` pixels thick."""
        # One sample per pixel along the longer axis leaves no gaps (DDA).
        steps = int(np.ceil(max(abs(x1 - x0), abs(y1 - y0)))) + 1
        t = np.linspace(0.0, 1.0, steps)
        xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        half = (width - 1) / 2.0
        for ox in np.arange(-half, half + 1):
            for oy in np.arange(-half, half + 1):
                self._plot(xs + ox, ys + oy, color)

    def polyline(self, xs: np.ndarray, ys: np.ndarray,
                 color: Color = (0, 0, 0), width: int = 1) -> None:
        """Connected segments through the points (xs[k], ys[k]), e.g. a curve."""
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        for k in range(len(xs) - 1):
            self.line(xs[k], ys[k], xs[k + 1], ys[k + 1], color, width)

    def circle(self, cx: float, cy: float, r: float,
               color: Color = (0, 0, 0), fill: bool = True) -> None:
        """Disc (``fill``) or one-pixel ring of radius ``r`` centred at (cx, cy)."""
        x_lo, x_hi = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)), self.width - 1)
        y_lo, y_hi = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)), self.height - 1)
        if x_lo > x_hi or y_lo > y_hi:
            return
        yy, xx = np.mgrid[y_lo:y_hi + 1, x_lo:x_hi + 1]
        d = np.hypot(xx - cx, yy - cy)
        mask = d <= r if fill else (d <= r) & (d > r - 1.0)
        self.pixels[yy[mask], xx[mask]] = color

    def rect(self, x0: float, y0: float, x1: float, y1: float,
             color: Color = (0, 0, 0), fill: bool = True) -> None:
        """Axis-aligned rectangle with corners (x0, y0), (x1, y1), inclusive."""
        xa, xb = sorted((int(round(x0)), int(round(x1))))
        ya, yb = sorted((int(round(y0)), int(round(y1))))
        if fill:
            xa, xb = max(xa, 0), min(xb, self.width - 1)
            ya, yb = max(ya, 0), min(yb, self.height - 1)
            if xa <= xb and ya <= yb:
                self.pixels[ya:yb + 1, xa:xb + 1] = color
            return
        for (p0, p1) in (((xa, ya), (xb, ya)), ((xb, ya), (xb, yb)),
                         ((xb, yb), (xa, yb)), ((xa, yb), (xa, ya))):
            self.line(*p0, *p1, color=color)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the canvas as a PNG; atomic (temp file + rename) so readers never see half."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(encode_png(self.pixels))
        os.replace(tmp, path)
        return path


def _chunk(tag: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type + data."""
    return (struct.pack(">I", len(data)) + tag + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 RGB array."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expecting an (H, W, 3) array, got shape {pixels.shape}")
    h, w, _ = pixels.shape
    # Each scanline starts with its filter-type byte; 0 = none.
    raw = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, 3 * w)], axis=1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, RGB, deflate, no interlace
    return (PNG_SIGNATURE + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _chunk(b"IEND", b""))
