"""Reading ``.npy`` files that come from elsewhere: the header is checked before any
memory is allocated.

``np.load`` trusts the header: a file of a few bytes whose header declares
``shape=(100000000000, 64)`` makes it allocate terabytes (``MemoryError``, or the
machine swaps), and a truncated file fails with a message that does not say so. Here
the header is read first (``np.lib.format.read_array_header_*``) and the data size it
declares, ``prod(shape) * itemsize``, must equal the bytes that follow it in the file.
"""
import os

import numpy as np

from mllmrec_pyg.errors import InputError

__all__ = ["read_npy_header", "load_npy"]


def read_npy_header(path: str):
    """``(shape, fortran_order, dtype, data_offset)`` of the ``.npy`` file ``path``.

    Raises:
        InputError: not an ``.npy`` file, an object (pickled) dtype, or a header whose
            shape and dtype do not match the file's size, naming ``path``.
    """
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:  # numpy >= 1.17 also writes 3.0 (utf-8 field names)
                shape, fortran, dtype = fmt._read_array_header(f, version)
        except (ValueError, OSError, EOFError, SyntaxError) as err:
            raise InputError(path, f"not an .npy file ({' '.join(str(err).split())})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise InputError(path, f"not a numeric .npy array: dtype {dtype} holds pickled Python objects, "
                               f"which are never loaded")
    if any(int(n) < 0 for n in shape):
        raise InputError(path, f"header declares a negative shape {shape}")
    declared = int(np.prod([int(n) for n in shape], dtype=object)) * dtype.itemsize
    actual = os.path.getsize(path) - offset
    if declared != actual:
        raise InputError(path, f"the header declares shape {tuple(shape)} of {dtype} ({declared:,} bytes) but "
                               f"the file holds {actual:,} bytes of data (truncated or corrupt)")
    return tuple(shape), fortran, dtype, offset


def load_npy(path: str) -> np.ndarray:
    """The array of ``path`` after :func:`read_npy_header` has checked its header (never
    unpickles: ``allow_pickle=False``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    read_npy_header(path)
    return np.load(path, allow_pickle=False)
