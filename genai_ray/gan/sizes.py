"""Image sizes the convolutional families can make, and their channel schedule.

Square images of s * 2**k pixels, s in 4..7 and k >= 1 (8, 10, 12, 14, 16, 20, 24, 28, 32, 40, ..., 64, ...,
128). G starts at s x s and doubles the resolution k times, as the classic MNIST DCGAN does for 28 = 7 * 4
(7 -> 14 -> 28); powers of two start at 4x4. Channels are ``base_channels`` at full resolution and double at
each halving (capped at 16x base), so the network stays balanced at every size.
"""

from __future__ import annotations

from genai_ray.errors import UserError

MIN_START, MAX_START = 4, 7  # G's first feature map is s x s with s in this range


def start_size(side: int) -> int:
    """The s of side = s * 2**k: halve while the result stays an integer of at least MIN_START."""
    s = side
    while s % 2 == 0 and s // 2 >= MIN_START:
        s //= 2
    return s


def upsamplings(image_shape: tuple[int, int, int]) -> int:
    """k, the doublings from s x s to the full resolution."""
    h = image_shape[0]
    return (h // start_size(h)).bit_length() - 1


def buildable_sides(up_to: int = 128) -> list[int]:
    return sorted({s << k for s in range(MIN_START, MAX_START + 1) for k in range(1, 12) if s << k <= up_to})


def channels(base: int, level: int, k: int) -> int:
    """Channels at resolution s * 2**level (level k is the full resolution)."""
    return base * min(2 ** (k - level), 16)


def check_square(image_shape: tuple[int, int, int], family_name: str) -> None:
    """Refuse sizes a convolutional family can't produce, before any worker starts."""
    h, w, c = image_shape
    if h != w or h not in buildable_sides(max(h, 8)):
        raise UserError(
            f"model.family={family_name} makes square images of s*2^k pixels (s in {MIN_START}..{MAX_START}, k >= 1: "
            f"{', '.join(map(str, buildable_sides(64)))}, ...), but the dataset is {h}x{w}; re-prepare it with "
            "--image-size (for example 28, 32 or 64) or use model.family=mlp"
        )
    if c not in (1, 3):
        raise UserError(f"model.family={family_name} needs 1 or 3 channels, the dataset has {c}")
