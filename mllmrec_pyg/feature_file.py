r"""The item/user feature-file format, read and written in one place.

A feature file is a RecBole *additional atomic feature file* (``docs/recbole.md``)::

    iid:token<TAB>item_emb:float_seq
    242<TAB>0.0123 -0.0456 ... (d floats, one space apart)

one row per original id token. Both packages use this module: the encoders and
dataset converters of :mod:`mllmrec_pyg` write it, :mod:`recbole_models` loads it
through RecBole (``recbole_models.features`` checks it against the dataset).
"""
import os
from typing import Dict, Sequence, Tuple

import numpy as np

from mllmrec_pyg.text.decode import read_table

__all__ = ["read_feature_file", "write_feature_file"]


def read_feature_file(path: str) -> Tuple[list, np.ndarray]:
    """Reads a RecBole feature file (docs/recbole.md) into ``(tokens, [n, d] float32)``.

    Raises:
        ValueError: a header other than ``<id>:token <value>:float_seq``, a row that is not
            a list of numbers or differs in length, or an id on two rows, naming the file,
            the line and the id.
    """
    frame = read_table(path)
    if frame.shape[1] != 2 or not frame.columns[1].endswith(":float_seq"):
        raise ValueError(f"{path}: expected two columns `<id>:token` and `<value>:float_seq`, "
                         f"got {list(frame.columns)}")
    tokens = frame.iloc[:, 0].tolist()
    first: Dict[str, int] = {}
    for number, token in enumerate(tokens, start=2):
        if token in first:
            raise ValueError(f"{path}, line {number}: id {token!r} appears twice (first on line "
                             f"{first[token]}); one row per id")
        first[token] = number
    rows = []
    for number, text in enumerate(frame.iloc[:, 1], start=2):
        try:
            rows.append(np.asarray(text.split(), dtype=np.float32))
        except ValueError:
            raise ValueError(f"{path}, line {number}: not a list of numbers") from None
        if rows[-1].shape != rows[0].shape:
            raise ValueError(f"{path}, line {number}: {rows[-1].size} values, line 2 has {rows[0].size}")
    if not rows:
        raise ValueError(f"{path}: no rows")
    return tokens, np.stack(rows)


def write_feature_file(path: str, id_field: str, value_field: str, tokens: Sequence[str],
                       values: np.ndarray, fmt: str = "%.7g") -> None:
    """Writes a feature file atomically (temporary file, then rename).

    Args:
        path: Destination, e.g. ``data/ml-100k/ml-100k.itememb``.
        id_field / value_field: Column names, e.g. ``iid`` / ``item_emb``.
        tokens: Original id tokens, one per row of ``values``.
        values: ``[len(tokens), d]`` finite floats.
        fmt: Number format (``%.7g`` keeps float32 precision).
    """
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] != len(tokens):
        raise ValueError(f"{path}: values must be [{len(tokens)}, d], got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: refusing to write NaN or inf values")
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(f"{id_field}:token\t{value_field}:float_seq\n")
            for token, row in zip(tokens, values):
                token = str(token)
                if "\t" in token or "\n" in token:
                    raise ValueError(f"{path}: id token {token!r} contains a tab or newline")
                f.write(token + "\t" + " ".join(fmt % v for v in row) + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
