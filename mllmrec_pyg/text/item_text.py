"""Item descriptions fused from the columns of a RecBole ``.item`` file (NOTES §1 step 2).

The paper's multimodal description is the concatenation title + brand +
categories + text description + image description. :func:`item_texts` renders
each item with a template:

- ``template=None`` (default): every known non-empty column, in the order of
  :data:`FIELD_LABELS`, as ``"<Label>: <value>."``, then the image description
  when one is given. For MovieLens-100k this is
  ``"Title: Toy Story. Year: 1995. Genres: Animation Children's Comedy."``.
- a ``str.format`` template naming columns, e.g.
  ``"{title} by {brand}. {description} Looks: {image_description}"``;
  ``{image_description}`` is the MLLM's text for the item (empty when absent).
"""
import os
from typing import Dict, Mapping, Optional

import numpy as np
import pandas as pd

from mllmrec_pyg.text.decode import read_table

# Column -> label, in the order the default description lists them.
FIELD_LABELS = {
    "title": "Title", "movie_title": "Title", "brand": "Brand", "categories": "Categories",
    "release_year": "Year", "class": "Genres", "description": "Description",
    "image_description": "Image",
}


def read_atomic(path: str) -> pd.DataFrame:
    """A RecBole atomic file as strings, with the ``:type`` suffixes dropped from the header."""
    frame = read_table(path)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def item_texts(item_file: str, template: Optional[str] = None,
               image_descriptions: Optional[Mapping[str, str]] = None,
               id_field: str = "item_id") -> Dict[str, str]:
    """``{item token: description}`` for every row of ``item_file``.

    Args:
        item_file: RecBole ``.item`` atomic file.
        template: ``str.format`` template over the file's columns and
            ``image_description``; ``None`` for the default labelled list.
        image_descriptions: ``{item token: image text}`` from the MLLM stage.
        id_field: the item id column.
    """
    frame = read_atomic(item_file)
    if id_field not in frame.columns:
        raise ValueError(f"{item_file}: no {id_field!r} column (has {list(frame.columns)})")
    repeated = frame[id_field].duplicated()
    if repeated.any():
        # One description per item; a silent "last row wins" would hide a broken merge.
        row = int(np.flatnonzero(repeated.to_numpy())[0])
        token = frame[id_field].iloc[row]
        first = int(np.flatnonzero((frame[id_field] == token).to_numpy())[0])
        raise ValueError(f"{item_file}, line {row + 2}: item {token!r} appears twice (first on line "
                         f"{first + 2}); one row per item")
    images = dict(image_descriptions or {})
    frame["image_description"] = frame[id_field].map(images).fillna("")
    out: Dict[str, str] = {}
    for row in frame.to_dict("records"):
        token = row[id_field]
        if template is None:
            parts = []
            for field, label in FIELD_LABELS.items():
                value = str(row.get(field, "")).strip()
                if value:
                    parts.append(f"{label}: {value.rstrip('.')}.")
            out[token] = " ".join(parts)
        else:
            try:
                out[token] = template.format(**row).strip()
            except KeyError as err:
                raise ValueError(f"template names {err.args[0]!r}, which {item_file} has no column for "
                                 f"(columns: {list(frame.columns)})") from None
    return out
