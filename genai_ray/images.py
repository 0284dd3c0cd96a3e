"""Image helpers: grids and PNGs that carry their provenance in text chunks."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, PngImagePlugin


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [0, 1] or uint8 -> uint8."""
    if images.dtype == np.uint8:
        return images
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def grid(images: np.ndarray, cols: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """(N, H, W, C) -> one (rows*H, cols*W, C) uint8 mosaic, optionally upscaled for small images."""
    images = to_uint8(images)
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[y : y + h, x : x + w] = img
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def auto_scale(height: int) -> int:
    """Upscale tiny images (8x8 digits) so a grid is visible."""
    return max(1, 64 // max(height, 1))


def png_bytes(image: np.ndarray, text: dict[str, str] | None = None) -> bytes:
    """Encode one HWC uint8 image as PNG, with optional tEXt chunks (model, seed...)."""
    image = to_uint8(image)
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, str(value))
    buf = io.BytesIO()
    pil.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def grid_png(images: np.ndarray, text: dict[str, str] | None = None, cols: int | None = None) -> bytes:
    return png_bytes(grid(images, cols=cols, scale=auto_scale(images.shape[1])), text)


def png_text(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as im:
        return dict(getattr(im, "text", {}))
