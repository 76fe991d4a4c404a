"""Decoding image files into arrays, run in worker processes by the ``imagefolder`` plugin.

Kept free of modelcycle imports beyond numpy and Pillow, so a worker starts fast.
"""

from __future__ import annotations

import hashlib
import io
from typing import NamedTuple

import numpy as np

__all__ = ["Decoded", "GRAY_MODES", "decode_files"]

#: Pillow modes that hold no colour (decoded to ``L``); every other mode is decoded to ``RGB``.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class Decoded(NamedTuple):
    """One chunk of decoded files, in the order given.

    Attributes:
        arrays: uint8 ``(H, W)`` (grayscale) or ``(H, W, 3)`` (colour) per file.
        md5: hex md5 of each file's bytes.
        error: ``(index, message)`` of the first file that could not be decoded, or ``None``.
    """

    arrays: list[np.ndarray]
    md5: list[str]
    error: tuple[int, str] | None


def decode_files(paths: list[str], color: str, size: tuple[int, int] | None) -> Decoded:
    """Read and decode ``paths`` (each file is read once: its md5 and its pixels).

    ``color``: ``grayscale`` or ``rgb`` converts every image; ``auto`` keeps grayscale files
    grayscale and decodes the rest as RGB. ``size`` ``(H, W)`` resizes (bilinear, antialiased;
    JPEGs are decoded at a reduced scale first when that is still at least ``size``).
    """
    from PIL import Image

    arrays: list[np.ndarray] = []
    digests: list[str] = []
    for index, path in enumerate(paths):
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
            digests.append(hashlib.md5(raw, usedforsecurity=False).hexdigest())
            with Image.open(io.BytesIO(raw)) as image:
                mode = ("L" if image.mode in GRAY_MODES else "RGB") if color == "auto" else \
                    ("L" if color == "grayscale" else "RGB")
                if size is not None and image.format == "JPEG":
                    image.draft(mode, (size[1], size[0]))
                if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F") and mode == "L":
                    pixels = np.asarray(image, dtype=np.float64)
                    top = 65535.0 if image.mode.startswith("I;16") or pixels.max(initial=0) > 255 else 255.0
                    image = Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8))
                elif image.mode != mode:
                    image = image.convert(mode)
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                arrays.append(np.asarray(image, dtype=np.uint8))
        except Exception as exc:  # any unreadable file: reported with its path by the caller
            return Decoded(arrays, digests, (index, f"{type(exc).__name__}: {exc}"))
    return Decoded(arrays, digests, None)
