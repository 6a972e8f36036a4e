"""Reading text input files the same way everywhere: UTF-8, an optional byte-order mark
dropped, gzip detected from the first bytes, and a decoding error reported with the
file and the REAL line of the bad byte.

A text-mode ``open(path, encoding="utf-8")`` decodes in blocks of several KiB, so a
bad byte on line 11 fails while line 1 is being read, and a BOM (``EF BB BF``, as
written by Excel and Windows tools) stays glued to the first field (``"\\ufeffU0"``).
Here every line is decoded on its own (``utf-8-sig`` for the first one).
"""
import gzip
import io
import os
from typing import Iterator, Tuple

import pandas as pd

__all__ = ["iter_lines", "read_text", "read_table"]

_GZIP_MAGIC = b"\x1f\x8b"


def _open_binary(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else open(path, "rb")


def _decode(path: str, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}, line {number}: not UTF-8 (byte 0x{raw[err.start]:02x} at column "
                         f"{err.start + 1}); re-save the file as UTF-8") from None


def iter_lines(path: str) -> Iterator[Tuple[int, str]]:
    """``(1-based line number, decoded line)`` for every line of ``path`` (plain or gzip),
    line endings kept.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line is not UTF-8, or the gzip stream is corrupt, naming the file
            and the line.
    """
    number = 0
    try:
        with _open_binary(path) as f:
            for number, raw in enumerate(f, start=1):
                yield number, _decode(path, number, raw)
    except (gzip.BadGzipFile, EOFError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{path}, line {number + 1}: cannot read ({err})") from None


def read_text(path: str) -> str:
    """The whole decoded text of ``path`` (see :func:`iter_lines` for the rules)."""
    return "".join(line for _, line in iter_lines(path))


def read_table(path: str) -> pd.DataFrame:
    """A tab-separated table with a header line, every value a string (no NA guessing,
    no quoting: free text keeps its quotes)."""
    text = read_text(path)
    try:
        return pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False, quoting=3)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file (a header line is needed)") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path}: not a tab-separated table ({err})") from None
