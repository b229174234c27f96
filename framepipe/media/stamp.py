"""A frame-number code painted into generated frames, read back after encode, annotate and transport.

Live-view tests and the latency bench need to know *which* source frame a player
shows: the stamp is a row of square blocks along the bottom-left edge, black for 0
and white for 1, 12 bits of frame number then 4 check bits. Blocks are large
(1/40 of the frame height, at least 8 px) so H.264 at any sane quality, scaling
in a browser and the encoder's boxes (drawn around faces, far from the bottom
edge) leave them readable; the check bits turn a damaged read into ``None``
rather than a wrong number. The same geometry is read in JavaScript by the
console bench (``bench/webrtc_latency.py``), so keep the two in step.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

VALUE_BITS = 12
CHECK_BITS = 4
BITS = VALUE_BITS + CHECK_BITS
MODULUS = 1 << VALUE_BITS


def block_size(height: int) -> int:
    return max(8, height // 40)


def check(value: int) -> int:
    """The 4 check bits of ``value``: CRC-4 (x^4 + x + 1): one flipped block, or 4 adjacent, shows."""
    crc = 0
    for i in range(VALUE_BITS - 1, -1, -1):
        top = ((crc >> 3) & 1) ^ ((value >> i) & 1)
        crc = ((crc << 1) & 0xF) ^ (0b0011 if top else 0)
    return crc


def bits_of(value: int) -> list[int]:
    word = (value % MODULUS) << CHECK_BITS | check(value % MODULUS)
    return [(word >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def paint_stamp(rgb: npt.NDArray[np.uint8], value: int) -> None:
    """Paint ``value`` (mod 4096) into ``rgb`` (H×W×3) in place."""
    height = rgb.shape[0]
    size = block_size(height)
    for i, bit in enumerate(bits_of(value)):
        rgb[height - size : height, i * size : (i + 1) * size] = 255 if bit else 0


def read_stamp(rgb: npt.NDArray[np.uint8]) -> int | None:
    """The value painted by :func:`paint_stamp`, or None when the check bits disagree."""
    height = rgb.shape[0]
    size = block_size(height)
    if rgb.shape[1] < BITS * size:
        return None
    inner = max(1, size // 4)
    word = 0
    for i in range(BITS):
        y0, x0 = height - size + inner, i * size + inner
        block = rgb[y0 : height - inner, x0 : (i + 1) * size - inner]
        word = word << 1 | int(float(block.mean()) > 127.5)
    value, got = word >> CHECK_BITS, word & ((1 << CHECK_BITS) - 1)
    return value if check(value) == got else None
