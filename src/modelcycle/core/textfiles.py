"""Reading the text files modelcycle keeps (``modelcycle.yaml``, manifests, ``state.json``, ready
files) so that undecodable bytes become one clear error naming the file, never a
``UnicodeDecodeError`` traceback. A leaf module: the caller passes the error class to raise.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_utf8", "decode_utf8"]


def decode_utf8(data: bytes, path: Path, error: type[Exception], fix: str) -> str:
    """``data`` (the bytes of ``path``) as UTF-8 text.

    Raises:
        error: the bytes are not UTF-8; the message names ``path``, the first bad byte and its
            offset, then ``fix`` (what the user should do).
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start]
        raise error(
            f"{path} is not UTF-8 text (byte 0x{bad:02x} at offset {exc.start} cannot be decoded): {fix}"
        ) from None


def read_utf8(path: Path, error: type[Exception], fix: str) -> str:
    """The UTF-8 text of ``path`` (see :func:`decode_utf8`); ``OSError`` propagates."""
    return decode_utf8(Path(path).read_bytes(), Path(path), error, fix)
