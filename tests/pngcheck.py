"""Reading the PNGs the project draws, for tests: structure checked here, pixels decoded by
Pillow (which the plots extra brings with matplotlib)."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any


def read_png(data: bytes) -> tuple[int, int, Any]:
    """Width, height and RGB pixels (a numpy array, height x width x 3) of a PNG, after checking
    its structure here (signature, every chunk's CRC, IHDR, the pixel data's inflated length:
    one filter byte per row) and decoding its pixels with Pillow (the plots extra brings it)."""
    import numpy as np
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    pos, idat, head = 8, b"", b""
    for _ in range(10_000):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(tag + body) == crc, tag
        if tag == b"IHDR":
            head = body
        elif tag == b"IDAT":
            idat += body
        elif tag == b"IEND":
            break
        pos += 12 + length
    else:
        raise AssertionError("no IEND chunk")
    width, height, depth, color_type = struct.unpack(">IIBB", head[:10])
    channels = {2: 3, 6: 4}[color_type]  # RGB or RGBA, 8 bits
    assert depth == 8
    assert len(zlib.decompress(idat)) == height * (1 + channels * width)
    with Image.open(io.BytesIO(data)) as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape == (height, width, 3)
    return width, height, pixels


def pixels_near(pixels: Any, hex_color: str, tolerance: int = 10) -> int:
    """How many pixels are within ``tolerance`` of ``hex_color`` on every channel."""
    import numpy as np

    rgb = np.array(list(bytes.fromhex(hex_color.lstrip("#"))), dtype=np.int16)
    return int((np.abs(pixels.astype(np.int16) - rgb) <= tolerance).all(axis=2).sum())
