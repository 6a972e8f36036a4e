"""Amazon review data (2014 release, McAuley et al.) → a re-indexed, k-core, split
RecBole dataset (NOTES §3).

Inputs, plain or gzip-compressed (detected from the file's first bytes):

- reviews: ``reviews_<Category>_5.json.gz``, one JSON object per line with at
  least ``reviewerID``, ``asin``, ``overall`` and ``unixReviewTime``; or the
  ratings-only ``ratings_<Category>.csv`` (``user,item,rating,timestamp``, no
  header), chosen by a ``.csv`` / ``.csv.gz`` name.
- meta (optional): ``meta_<Category>.json.gz``, one *Python literal* per line
  (single quotes, so not JSON); parsed with :func:`ast.literal_eval`, never
  ``eval``. Fields used: ``asin``, ``title``, ``brand``, ``categories``,
  ``description``, ``price``, ``imUrl``.

Steps of :func:`prepare_amazon`: read → collapse duplicate (user, item) pairs
(the earliest review is kept) → iterated k-core (users and items with fewer than
``k`` interactions are dropped until none is left) → re-index users and items
``0..n-1`` in order of first appearance (MMRec's ``0rating2inter`` order) →
split (:mod:`~mllmrec_pyg.datasets.split`) → atomic files
(:mod:`~mllmrec_pyg.datasets.atomic`).
"""
import ast
import csv
import json
import logging
import math
import os
from typing import Dict, Iterator, Optional, Sequence, Set, Tuple

import numpy as np
import pandas as pd

from mllmrec_pyg.datasets.split import mmrec_split, ratio_split
from mllmrec_pyg.text.decode import iter_lines

log = logging.getLogger(__name__)

__all__ = [
    "read_reviews", "read_meta", "dedup_interactions", "k_core",
    "reindex", "item_table", "prepare_amazon", "REVIEW_FIELDS", "ITEM_COLUMNS",
]

# Review key -> our column.
REVIEW_FIELDS = {"reviewerID": "user", "asin": "item", "overall": "rating", "unixReviewTime": "timestamp"}

# Columns of the `.item` file we write, with their RecBole types. Free text is
# `token_seq` (space-separated words) so RecBole could read the file, but the
# dataset YAML leaves `.item` out of `load_col`: RecBole never parses it, only our
# text pipeline (mllmrec_pyg.text.item_text) does.
ITEM_COLUMNS = {
    "item_id": "token", "asin": "token", "title": "token_seq", "brand": "token_seq",
    "categories": "token_seq", "description": "token_seq", "price": "float",
    "image_url": "token", "image": "token",
}


def _lines(path: str) -> Iterator[Tuple[int, str]]:
    """``(line number, text)`` of the non-blank lines (UTF-8, BOM dropped); a decoding error
    names the file and its real line (:func:`~mllmrec_pyg.text.decode.iter_lines`)."""
    for number, line in iter_lines(path):
        if line.strip():
            yield number, line


def _parse_record(path: str, number: int, line: str, literal_first: bool) -> dict:
    """One line as a dict: JSON or a Python literal (never ``eval``)."""
    parsers = (ast.literal_eval, json.loads) if literal_first else (json.loads, ast.literal_eval)
    record, errors = None, []
    for parse in parsers:
        try:
            record = parse(line.strip())
            break
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
            errors.append(f"{type(err).__name__}: {err}")
    if record is None:
        raise ValueError(f"{path}, line {number}: not a JSON object or Python dict literal ({errors[0]})")
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {number}: expected an object/dict, got {type(record).__name__}")
    return record


def _is_csv(path: str) -> bool:
    name = path.lower()
    return name.endswith(".csv") or name.endswith(".csv.gz")


def read_reviews(path: str) -> pd.DataFrame:
    """Reads a reviews file into a frame with columns ``user`` (str), ``item`` (str),
    ``rating`` (float), ``timestamp`` (int), ``line`` (1-based source line), in file order.

    Args:
        path: ``reviews_*.json[.gz]`` (JSON lines; Python-literal lines are accepted
            too) or ``ratings_*.csv[.gz]`` (``user,item,rating,timestamp``, no header).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a malformed line, a missing field or a non-numeric rating or time,
            naming the file and line.
    """
    users, items, ratings, times, lines = [], [], [], [], []
    csv_input = _is_csv(path)
    for number, line in _lines(path):
        if csv_input:
            try:
                row = next(csv.reader([line]))
            except csv.Error as err:  # e.g. a field over csv.field_size_limit()
                raise ValueError(f"{path}, line {number}: not a CSV line ({err})") from None
            if len(row) != 4:
                raise ValueError(f"{path}, line {number}: expected 4 comma-separated columns "
                                 f"(user,item,rating,timestamp), got {len(row)}")
            user, item, rating, stamp = row
            where = "column"
        else:
            record = _parse_record(path, number, line, literal_first=False)
            missing = [k for k in REVIEW_FIELDS if k not in record or record[k] in (None, "")]
            if missing:
                raise ValueError(f"{path}, line {number}: missing field(s) {missing} "
                                 f"(a review needs {list(REVIEW_FIELDS)})")
            user, item, rating, stamp = (record[k] for k in REVIEW_FIELDS)
            where = "field"
        try:
            rating = float(rating)
            stamp_f = float(stamp)
        except (TypeError, ValueError):
            raise ValueError(f"{path}, line {number}: {where} rating/unixReviewTime must be numbers, "
                             f"got {rating!r} / {stamp!r}") from None
        if not (math.isfinite(rating) and math.isfinite(stamp_f)):
            raise ValueError(f"{path}, line {number}: rating and time must be finite numbers")
        if not -2 ** 63 <= stamp_f < 2 ** 63:
            raise ValueError(f"{path}, line {number}: unixReviewTime {stamp!r} does not fit a 64-bit integer")
        user, item = str(user).strip(), str(item).strip()
        if not user or not item or any(c in user + item for c in "\t\n\r"):
            raise ValueError(f"{path}, line {number}: empty user/item id or one with a tab or newline")
        users.append(user)
        items.append(item)
        ratings.append(rating)
        times.append(int(stamp_f))
        lines.append(number)
    if not users:
        raise ValueError(f"{path}: no reviews in the file")
    return pd.DataFrame({"user": users, "item": items, "rating": np.asarray(ratings, dtype=np.float64),
                         "timestamp": np.asarray(times, dtype=np.int64), "line": np.asarray(lines)})


def _clean(text) -> str:
    """A one-line string: tabs and newlines would break the atomic file's columns."""
    if text is None:
        return ""
    if isinstance(text, (list, tuple)):
        text = " ".join(str(t) for t in text)
    return " ".join(str(text).split())


def _categories(value) -> str:
    """``[['Baby', 'Nursery'], ['Baby', 'Gifts']]`` → ``"Baby, Nursery, Gifts"`` (unique names in
    order, so the last one is the most specific name of the last path)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _clean(value)
    names = []
    for path in value:
        for name in (path if isinstance(path, (list, tuple)) else [path]):
            name = _clean(name)
            if name and name not in names:
                names.append(name)
    return ", ".join(names)


def _price(value) -> str:
    if value in (None, ""):
        return ""
    try:
        number = float(str(value).replace("$", "").replace(",", "").strip())
    except ValueError:
        return ""  # prices like "$1.00 - $3.00" exist; a missing price is no error
    return repr(number) if math.isfinite(number) else ""


def read_meta(path: str, items: Optional[Set[str]] = None) -> Dict[str, dict]:
    """Reads a metadata file into ``{asin: {title, brand, categories, description, price,
    image_url}}`` (one-line strings; ``price`` a number as text or empty).

    Args:
        path: ``meta_*.json[.gz]``, one Python dict literal (or JSON object) per line,
            parsed with :func:`ast.literal_eval` / :func:`json.loads`, never ``eval``.
        items: keep only these asins (saves memory on the full category files).

    Raises:
        ValueError: a malformed line, a line without ``asin`` or an asin seen twice,
            naming the file and line.
    """
    out: Dict[str, dict] = {}
    first_line: Dict[str, int] = {}
    for number, line in _lines(path):
        record = _parse_record(path, number, line, literal_first=True)
        asin = record.get("asin")
        if asin in (None, ""):
            raise ValueError(f"{path}, line {number}: missing field 'asin'")
        asin = str(asin).strip()
        if asin in first_line:
            raise ValueError(f"{path}, line {number}: asin {asin!r} already described on line "
                             f"{first_line[asin]}")
        first_line[asin] = number
        if items is not None and asin not in items:
            continue
        out[asin] = {
            "title": _clean(record.get("title")),
            "brand": _clean(record.get("brand")),
            "categories": _categories(record.get("categories")),
            "description": _clean(record.get("description")),
            "price": _price(record.get("price")),
            "image_url": _clean(record.get("imUrl") or record.get("imageURLHighRes") or record.get("imageURL")),
        }
    return out


def dedup_interactions(frame: pd.DataFrame) -> Tuple[pd.DataFrame, int]:
    """Collapses repeated (user, item) pairs to their earliest review (ties: the first in
    the file); returns ``(frame in file order, number of rows dropped)``."""
    order = frame.sort_values(["timestamp", "line"], kind="stable")
    keep = ~order.duplicated(["user", "item"], keep="first")
    kept = order[keep].sort_values("line", kind="stable")
    return kept.reset_index(drop=True), int(len(frame) - len(kept))


def k_core(frame: pd.DataFrame, k: int, user_col: str = "user", item_col: str = "item") -> Tuple[pd.DataFrame, int]:
    """Iterated k-core: drops users and items with fewer than ``k`` interactions, again and
    again until every remaining user and item has at least ``k``; returns
    ``(filtered frame, number of rounds that dropped rows)``.

    Args:
        frame: interactions, one row per (user, item) pair.
        k: minimum interactions per user and per item (``k <= 1`` keeps everything).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k_core: k must be an int >= 0, got {k!r}")
    rounds = 0
    while True:
        users = frame[user_col].map(frame[user_col].value_counts())
        items = frame[item_col].map(frame[item_col].value_counts())
        keep = (users >= k) & (items >= k)
        if keep.all():
            return frame.reset_index(drop=True), rounds
        frame = frame[keep.values]
        rounds += 1


def reindex(frame: pd.DataFrame) -> Tuple[pd.DataFrame, pd.Index, pd.Index]:
    """Maps users and items to ``0..n-1`` in order of first appearance; returns
    ``(frame with int columns user/item, user originals, item originals)``."""
    users = pd.Index(pd.unique(frame["user"]))
    items = pd.Index(pd.unique(frame["item"]))
    out = frame.copy()
    out["user"] = users.get_indexer(frame["user"]).astype(np.int64)
    out["item"] = items.get_indexer(frame["item"]).astype(np.int64)
    return out, users, items


def item_table(item_originals: Sequence[str], meta: Dict[str, dict]) -> pd.DataFrame:
    """The ``.item`` rows (columns of :data:`ITEM_COLUMNS` but ``image``) for re-indexed
    items ``0..n-1`` whose original asins are ``item_originals``; items without metadata
    get empty fields."""
    rows = []
    empty = {"title": "", "brand": "", "categories": "", "description": "", "price": "", "image_url": ""}
    for index, asin in enumerate(item_originals):
        row = {"item_id": str(index), "asin": asin}
        row.update(meta.get(asin, empty))
        rows.append(row)
    return pd.DataFrame(rows, columns=[c for c in ITEM_COLUMNS if c != "image"])


def prepare_amazon(reviews: str, out_dir: str, meta: Optional[str] = None, name: Optional[str] = None,
                   k: int = 5, split: str = "mmrec", seed: int = 2024,
                   ratios: Sequence[float] = (0.8, 0.1, 0.1), order: str = "RO",
                   overwrite: bool = False) -> Dict:
    """Prepares an Amazon review dataset as RecBole atomic files in ``out_dir``.

    Args:
        reviews: reviews file (see :func:`read_reviews`).
        out_dir: dataset directory to create; RecBole reads ``<data_path>/<name>/<name>.*``,
            so its base name is the dataset name unless ``name`` says otherwise.
        meta: metadata file (see :func:`read_meta`), or ``None`` for an ``.item`` file
            with ids only.
        name: dataset name (default: the base name of ``out_dir``); must equal the base
            name of ``out_dir``.
        k: k-core threshold for users and items (5 as in MMRec and the paper).
        split: ``"mmrec"`` (per-user shuffle, (n-2, 1, 1) below 10 items, else 80/10/10;
            :func:`~mllmrec_pyg.datasets.split.mmrec_split`) or ``"ratio"`` (RecBole's
            per-user ``RS`` ratio split; :func:`~mllmrec_pyg.datasets.split.ratio_split`).
        seed: seed of the shuffle.
        ratios: train/valid/test ratios of the ``"ratio"`` split.
        order: ``"RO"`` (random) or ``"TO"`` (by time) for the ``"ratio"`` split.
        overwrite: replace an ``out_dir`` holding an earlier output of this function
            (never a directory with other data).

    Returns:
        the summary written to ``<out_dir>/prepare.json`` (counts, density, options).
    """
    from mllmrec_pyg.datasets.atomic import check_output_dir, dataset_name, write_dataset

    name = dataset_name(out_dir, name)
    check_output_dir(out_dir, overwrite, (reviews, meta))  # fail before minutes of reading
    raw = read_reviews(reviews)
    n_raw = len(raw)
    frame, n_dup = dedup_interactions(raw)
    frame, rounds = k_core(frame, k)
    if frame.empty:
        raise ValueError(f"{reviews}: no interaction is left after the {k}-core filter "
                         f"({n_raw} reviews read); use a smaller --k-core")
    frame, users, items = reindex(frame)
    if meta is not None:
        info = read_meta(meta, items=set(items))
        missing = len(items) - len(info)
        if missing:
            log.warning("%s: no metadata for %d of %d items (their .item fields stay empty)",
                        meta, missing, len(items))
    else:
        info, missing = {}, len(items)
    if split == "mmrec":
        labels = mmrec_split(frame["user"].to_numpy(), seed=seed)
    elif split == "ratio":
        labels = ratio_split(frame["user"].to_numpy(), frame["timestamp"].to_numpy(),
                             ratios=ratios, order=order, seed=seed)
    else:
        raise ValueError(f"split must be 'mmrec' or 'ratio', got {split!r}")
    frame["label"] = labels
    n_users, n_items, n_inter = len(users), len(items), len(frame)
    summary = {
        "dataset": name, "source": {"reviews": os.path.abspath(reviews),
                                    "meta": os.path.abspath(meta) if meta else None},
        "k_core": k, "k_core_rounds": rounds, "reviews_read": n_raw, "duplicates_collapsed": n_dup,
        "users": n_users, "items": n_items, "interactions": n_inter,
        "density": n_inter / (n_users * n_items),
        "items_without_meta": missing,
        "split": {"method": split, "seed": seed,
                  **({"ratios": list(ratios), "order": order} if split == "ratio" else {}),
                  "train": int((labels == 0).sum()), "valid": int((labels == 1).sum()),
                  "test": int((labels == 2).sum())},
    }
    user_map = pd.DataFrame({"user_id": users, "userID": np.arange(n_users)})
    item_map = pd.DataFrame({"asin": items, "itemID": np.arange(n_items)})
    write_dataset(out_dir, name, frame[["user", "item", "rating", "timestamp", "label"]],
                  item_table(items, info), summary, overwrite=overwrite,
                  extra_tables={"u_id_mapping.csv": user_map, "i_id_mapping.csv": item_map},
                  extra_yaml={f"{name}.mllmrec.yaml": mllmrec_yaml(out_dir, name, seed)},
                  inputs=(reviews, meta))
    return summary


# Paper's per-dataset (epsilon, k_c) (NOTES §1), matched on the dataset name.
PAPER_GRAPH = {"baby": (0.7, 10), "sport": (0.4, 10), "cloth": (0.6, 15)}


def mllmrec_yaml(out_dir: str, name: str, seed: int) -> Tuple[str, dict]:
    """``(comment, config)`` of ``<name>.mllmrec.yaml``: the dataset YAML plus the feature
    files that ``mllmrec encode`` writes (``.itememb`` / ``.useremb``, docs/recbole.md) and
    the paper's graph settings when the name is one of its datasets."""
    from mllmrec_pyg.datasets.atomic import recbole_config

    config = recbole_config(out_dir, seed, features={"itememb": ("iid", "item_emb", "item"),
                                                     "useremb": ("uid", "user_emb", "user")})
    for key, (eps, kc) in PAPER_GRAPH.items():
        if key in name.lower():
            config.update({"knn_threshold": eps, "cooc_k": kc})
    comment = (f"MLLMRec config of `{name}`: {name}.yaml plus the feature files, which do not exist\n"
               f"until `mllmrec encode {out_dir} --user-texts <preferences.jsonl>` (after describe-images /\n"
               f"preferences) writes them.\n"
               f"python -m recbole_models.run --model MLLMRec --dataset {name} "
               f"--config_files {os.path.join(out_dir, name + '.mllmrec.yaml')}")
    return comment, config
