"""Per-user behaviour lists from the TRAINING split only (NOTES §1 step 3, §2).

Where the interactions come from
--------------------------------
- A pre-split dataset (``<name>.train.inter``, ``<name>.valid.inter``,
  ``<name>.test.inter``): only ``<name>.train.inter`` is read. The validation and
  test files are never opened (their users are listed, with an empty history, only
  when ``users_from_all_splits=True``, which reads nothing but their user column).
- A dataset with only ``<name>.inter``: an explicit split is required, the name of a
  column marking the training rows (``split_column``, e.g. MMRec's ``x_label``, with
  ``train_value`` ``"0"``); without one the loader refuses, since it cannot tell
  training rows from test rows.
- ``leaky=True`` reads ALL interactions (train + valid + test, or the whole
  ``<name>.inter``). It exists only to measure how much the published scripts'
  leakage inflates results; it logs a loud warning and is never a default.

The token-budget rule (:func:`cut_history`)
-------------------------------------------
1. Items are ordered most recent first by timestamp (file order breaks ties and
   stands in when there is no timestamp column: later rows are more recent).
2. Each item description is truncated to ``item_tokens`` tokens.
3. Items are taken most recent first while the list (entries and joiners) fits in
   ``history_tokens`` tokens; the first item that does not fit and every older
   one are dropped. ``max_items`` caps the count as well.
4. The kept items are written oldest first, so the list reads as a timeline that
   ends with the user's latest taste, next to the instruction.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

from mllmrec_pyg.text.item_text import read_atomic

log = logging.getLogger(__name__)

LEAKY_WARNING = (
    "LEAKY MODE: behaviour lists are built from ALL interactions, validation and test "
    "included. Results from these texts are inflated by test leakage; use this only to "
    "measure the effect of leakage, never to report a model's accuracy."
)


class WordCounter:
    """A tokenizer-free token counter: whitespace-separated words. Used where no model
    tokenizer is at hand (e.g. ``--prompts-only`` without a local model); it
    undercounts sub-word tokens, so budgets set with it should leave headroom."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, n: int) -> str:
        words = text.split()
        return text if len(words) <= n else " ".join(words[:n])


class TokenizerCounter:
    """Counts and truncates with a Hugging Face tokenizer (no special tokens).

    Args:
        tokenizer: a ``transformers`` tokenizer.
        name: recorded with ``--prompts-only`` counts.
    """

    def __init__(self, tokenizer, name: str = "tokenizer"):
        self.tokenizer = tokenizer
        self.name = name

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, n: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= n:
            return text
        return self.tokenizer.decode(ids[:n], skip_special_tokens=True).strip()


def _split_files(dataset_dir: str, name: str) -> Dict[str, str]:
    return {part: os.path.join(dataset_dir, f"{name}.{part}.inter") for part in ("train", "valid", "test")}


def load_histories(dataset_dir: str, name: Optional[str] = None, leaky: bool = False,
                   split_column: Optional[str] = None, train_value: str = "0",
                   users_from_all_splits: bool = True) -> Dict[str, List[str]]:
    """``{user token: [item tokens, most recent first]}`` from the training interactions.

    Args:
        dataset_dir: directory of the RecBole atomic files.
        name: dataset name (default: the directory's base name).
        leaky: read every interaction (valid/test included); warns loudly. Measuring only.
        split_column: for a dataset with only ``<name>.inter``, the column whose value
            ``train_value`` marks a training row (e.g. ``x_label``). Ignored for a
            pre-split dataset.
        train_value: the value of ``split_column`` on training rows.
        users_from_all_splits: also list users that appear only in the valid/test files
            (or only in non-training rows), with an empty history, so that every user
            gets a text. Only their user ids are read.

    Raises ``FileNotFoundError`` when the dataset has no interaction file and
    ``ValueError`` for a single ``.inter`` without an explicit split.
    """
    name = name or os.path.basename(os.path.normpath(dataset_dir))
    splits = _split_files(dataset_dir, name)
    whole = os.path.join(dataset_dir, f"{name}.inter")
    if leaky:
        log.warning(LEAKY_WARNING)
        import warnings

        warnings.warn(LEAKY_WARNING, stacklevel=2)
    if os.path.isfile(splits["train"]):
        frames = [read_atomic(splits["train"])]
        if leaky:
            frames += [read_atomic(splits[p]) for p in ("valid", "test") if os.path.isfile(splits[p])]
        others = [] if leaky or not users_from_all_splits else [
            splits[p] for p in ("valid", "test") if os.path.isfile(splits[p])]
        source = splits["train"]
    elif os.path.isfile(whole):
        frame = read_atomic(whole)
        if leaky:
            frames, others = [frame], []
        else:
            if split_column is None:
                raise ValueError(
                    f"{whole}: a single interaction file and no split. Behaviour lists may only use "
                    f"training interactions: provide {name}.train.inter/.valid.inter/.test.inter, or name "
                    f"the column marking training rows (split_column, e.g. 'x_label' with train_value '0')")
            if split_column not in frame.columns:
                raise ValueError(f"{whole}: no split column {split_column!r} (columns: {list(frame.columns)})")
            train_rows = frame[split_column] == str(train_value)
            frames = [frame[train_rows]]
            # Only the user ids of the other rows are used (to give those users a text).
            others = [frame.loc[~train_rows, ["user_id"]]] if users_from_all_splits else []
        source = whole
    else:
        raise FileNotFoundError(f"{dataset_dir}: neither {splits['train']} nor {whole} exists")

    histories: Dict[str, List[Tuple[float, int, str]]] = {}
    row = 0
    for frame in frames:
        for col in ("user_id", "item_id"):
            if col not in frame.columns:
                raise ValueError(f"{source}: no {col!r} column (columns: {list(frame.columns)})")
        stamps = frame["timestamp"] if "timestamp" in frame.columns else None
        for k, (user, item) in enumerate(zip(frame["user_id"], frame["item_id"])):
            if stamps is not None:
                try:
                    t = float(stamps.iloc[k])
                except ValueError:
                    raise ValueError(f"{source}: timestamp {stamps.iloc[k]!r} of user {user} is not a number") from None
            else:
                t = 0.0
            histories.setdefault(user, []).append((t, row, item))
            row += 1
    out = {u: [i for _, _, i in sorted(h, key=lambda e: (e[0], e[1]), reverse=True)]
           for u, h in histories.items()}
    for other in others:
        users = read_atomic(other)["user_id"] if isinstance(other, str) else other["user_id"]
        for u in users:
            out.setdefault(u, [])
    return out


def cut_history(items: Sequence[str], descriptions: Dict[str, str], counter, history_tokens: int,
                item_tokens: int, item_format: str = "{text}", joiner: str = "; ",
                max_items: Optional[int] = None) -> Tuple[str, int]:
    """Renders one behaviour list within a token budget (rule in the module docstring).

    Args:
        items: item tokens, most recent first (as :func:`load_histories` gives them).
        descriptions: ``{item token: description}``.
        counter: a :class:`TokenizerCounter` or :class:`WordCounter`.
        history_tokens: token budget of the whole list.
        item_tokens: per-item truncation, in tokens.
        item_format: ``str.format`` template of one entry over ``{text}`` and ``{index}``.
        joiner: string between entries.
        max_items: at most this many items (``None``: no cap).

    Returns ``(list text, number of items kept)``.
    """
    if history_tokens < 1 or item_tokens < 1:
        raise ValueError(f"history_tokens ({history_tokens}) and item_tokens ({item_tokens}) must be >= 1")
    joiner_cost = counter.count(joiner) if joiner.strip() else 0
    kept: List[str] = []
    used = 0
    for item in items:
        if max_items is not None and len(kept) >= max_items:
            break
        if item not in descriptions:
            raise ValueError(f"item {item!r} has no description")
        text = counter.truncate(descriptions[item], item_tokens)
        cost = counter.count(item_format.format(text=text, index=len(kept) + 1)) + (joiner_cost if kept else 0)
        if used + cost > history_tokens:
            break
        kept.append(text)
        used += cost
    kept.reverse()  # oldest first
    entries = [item_format.format(text=t, index=k + 1) for k, t in enumerate(kept)]
    return joiner.join(entries), len(kept)
