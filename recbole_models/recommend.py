r"""Top-k items and user/item embeddings from a trained checkpoint, in Python and on
the command line.

::

    python -m recbole_models.recommend --checkpoint saved/MLLMRec-...pth --users 196 186 --k 10
    python -m recbole_models.recommend --checkpoint saved/BPR-...pth --export out/bpr

Top-k (:func:`top_k`): the model's full-sort scores :math:`s_{ui}` of every item
for each user, then the ``k`` best items among those not masked. What is masked
is a choice (``mask``):

- ``"train"`` (default): the user's TRAINING items, as RecBole masks them when it
  ranks the validation set. Validation and test items may be recommended: use it
  to see what the model ranks for a held-out item;
- ``"train+valid"``: training and validation items, as RecBole masks them when it
  ranks the test set (the published test scores);
- ``"all"``: every item the user has in any split: for recommending only items
  the user has never interacted with.

The padding item (RecBole's id 0) is never returned.

Embeddings (:func:`embeddings`): a user matrix :math:`U` and an item matrix
:math:`I` such that the model's full-sort score is the dot product,
:math:`s_{ui} = U_u^\top I_i`. The rule, tried in this order:

1. MLLMRec: the outputs of its two towers (after the user-item propagation
   of "+UI-GCN" when that is configured);
2. RecBole's full-sort cache: the ``restore_user_e`` / ``restore_item_e``
   matrices that RecBole's graph models (LightGCN, NGCF, DGCF, SGL, SpectralCF,
   NCL) fill when they rank, i.e. their propagated embeddings;
3. models whose ``forward()`` takes no argument and returns the user and item
   matrices;
4. models with ``user_embedding`` and ``item_embedding`` tables (matrix
   factorisation: BPR, LINE).

Whatever the source, :math:`U I^\top` is checked against the model's own
``full_sort_predict`` on up to 512 users before anything is returned; a model
whose scores are no such dot product (ItemKNN, EASE, NeuMF, MultVAE, ...) is
refused with a ``ValueError`` naming it, rather than exporting vectors that do
not mean what the file says. Which of RecBole's general models pass is listed in
``docs/recbole.md``.
"""
import argparse
import inspect
import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_models.checkpoint import LoadedModel, load_model
from recbole_models.features import write_feature_file

__all__ = ["MASKS", "Recommendation", "score_users", "top_k", "embeddings", "export_embeddings", "main"]

# Which splits' items are masked, per `mask` value.
MASKS = {"train": ("train",), "train+valid": ("train", "valid"), "all": ("train", "valid", "test")}


@dataclass
class Recommendation:
    """The ``k`` best items for one user, best first."""

    user: str
    items: List[str]
    scores: List[float]


@torch.no_grad()
def score_users(loaded: LoadedModel, user_ids: torch.Tensor) -> torch.Tensor:
    """``[B, n_items]`` scores of every item (column = internal item id) for internal user ids,
    by ``full_sort_predict``, or ``predict`` on every pair for models without it (as RecBole's
    trainer does)."""
    model, dataset = loaded.model, loaded.dataset
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    user_ids = user_ids.to(loaded.device)
    n_items = dataset.item_num
    try:
        scores = model.full_sort_predict(Interaction({uid_field: user_ids}))
    except NotImplementedError:
        pairs = Interaction({
            uid_field: user_ids.repeat_interleave(n_items),
            iid_field: torch.arange(n_items, device=user_ids.device).repeat(len(user_ids)),
        })
        scores = model.predict(pairs)
    return scores.view(len(user_ids), n_items).float()


def _seen(loaded: LoadedModel, user_ids: torch.Tensor, splits: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(row in ``user_ids``, item id) of every interaction of those users in ``splits``."""
    rows, cols = [], []
    for name in splits:
        part = loaded.splits.get(name)
        if part is None:
            continue
        seen = part.inter_matrix(form="csr")[user_ids.cpu().numpy()].tocoo()
        rows.append(torch.from_numpy(seen.row.astype(np.int64)))
        cols.append(torch.from_numpy(seen.col.astype(np.int64)))
    if not rows:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(rows), torch.cat(cols)


def top_k(loaded: LoadedModel, users: Sequence[str], k: int = 10, mask: str = "train",
          batch_size: int = 1024) -> List[Recommendation]:
    """The ``k`` best items for each user token, best first.

    Args:
        loaded: From :func:`recbole_models.checkpoint.load_model`.
        users: Original user tokens (as in the ``.inter`` files).
        k: Items per user (fewer when fewer items are left after masking).
        mask: ``"train"``, ``"train+valid"`` or ``"all"``: whose items are left out
            (module docstring).
        batch_size: Users scored at a time.

    Raises:
        KeyError: A user token the dataset does not have (named).
        ValueError: ``k < 1`` or an unknown ``mask``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {sorted(MASKS)}, got {mask!r}")
    users = [str(u) for u in users]
    user_ids = loaded.user_ids(users)  # every token checked before any scoring
    item_tokens = loaded.dataset.field2id_token[loaded.dataset.iid_field]
    out = []
    # In blocks of users, so that [users, items] scores stay small for long user lists.
    for start in range(0, len(users), batch_size):
        block = user_ids[start:start + batch_size]
        scores = score_users(loaded, block)
        scores[:, 0] = -torch.inf  # [PAD]
        rows, cols = _seen(loaded, block, MASKS[mask])
        scores[rows.to(scores.device), cols.to(scores.device)] = -torch.inf
        values, index = torch.topk(scores, min(k, scores.size(1)), dim=1)
        for user, vals, idx in zip(users[start:start + batch_size], values.cpu(), index.cpu()):
            keep = torch.isfinite(vals)
            out.append(Recommendation(user=user, items=[str(item_tokens[i]) for i in idx[keep].tolist()],
                                      scores=vals[keep].tolist()))
    return out


# -- embeddings ----------------------------------------------------------------------
def _candidates(model):
    """(source name, callable returning (U, I) or None), in the order of the module docstring."""
    if hasattr(model, "_all_outputs"):  # MLLMRec: both towers (+UI-GCN)
        yield "tower outputs", model._all_outputs
    if hasattr(model, "restore_user_e") and hasattr(model, "restore_item_e"):
        # Filled by the full_sort_predict call that computed the reference scores.
        yield "full-sort cache", lambda: (model.restore_user_e, model.restore_item_e)
    try:
        no_args = all(p.default is not inspect.Parameter.empty or
                      p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                      for p in inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        no_args = False
    if no_args:
        yield "forward()", model.forward
    if isinstance(getattr(model, "user_embedding", None), torch.nn.Embedding) and \
            isinstance(getattr(model, "item_embedding", None), torch.nn.Embedding):
        yield "embedding tables", lambda: (model.user_embedding.weight, model.item_embedding.weight)


@torch.no_grad()
def embeddings(loaded: LoadedModel, check_users: int = 512) -> Tuple[torch.Tensor, torch.Tensor, str]:
    r"""``(U, I, source)``: ``U`` ``[n_users, d]`` and ``I`` ``[n_items, d]`` indexed by internal
    id (row 0 is [PAD]) with ``U I^T`` equal to the model's full-sort scores, and the rule
    that produced them (module docstring).

    Args:
        loaded: From :func:`recbole_models.checkpoint.load_model`.
        check_users: Users (evenly spread over the ids) on which ``U I^T`` is compared
            with ``full_sort_predict``, to a relative tolerance of 1e-4 of the largest score.

    Raises:
        ValueError: The model's scores are not a dot product of matrices this rule finds.
    """
    model = loaded.model
    n_users, n_items = loaded.dataset.user_num, loaded.dataset.item_num
    ids = torch.unique(torch.linspace(1, n_users - 1, min(check_users, n_users - 1)).round().long())
    reference = score_users(loaded, ids)
    tried = []
    for source, get in _candidates(model):
        try:
            out = get()
        except Exception as err:  # a candidate that does not apply to this model
            tried.append(f"{source}: {type(err).__name__}")
            continue
        if not isinstance(out, (tuple, list)) or len(out) < 2:
            tried.append(f"{source}: not a (users, items) pair")
            continue
        u, i = out[0], out[1]
        if not (isinstance(u, torch.Tensor) and isinstance(i, torch.Tensor) and u.dim() == 2
                and i.dim() == 2 and u.shape[0] == n_users and i.shape[0] == n_items
                and u.shape[1] == i.shape[1]):
            tried.append(f"{source}: shapes do not match [{n_users}, d] and [{n_items}, d]")
            continue
        u, i = u.detach().float(), i.detach().float()
        dot = u[ids.to(u.device)] @ i.t()
        scale = float(reference.abs().max()) or 1.0
        if torch.allclose(dot.to(reference.device), reference, rtol=0.0, atol=1e-4 * scale):
            return u.cpu(), i.cpu(), source
        tried.append(f"{source}: U I^T differs from full_sort_predict")
    name = type(model).__name__
    raise ValueError(f"{name}: its scores are not a dot product of user and item embeddings "
                     f"that can be exported ({'; '.join(tried) or 'no candidate'})")


def _save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    try:
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_embeddings(loaded: LoadedModel, out_dir: str, overwrite: bool = False) -> Dict[str, str]:
    """Writes the embeddings of :func:`embeddings`, keyed by the original tokens, to ``out_dir``:

    - ``<dataset>.useremb`` / ``<dataset>.itememb``: RecBole atomic feature files
      (``uid:token  user_emb:float_seq``, ``iid:token  item_emb:float_seq``; the format of
      ``docs/recbole.md``, floats with 9 significant digits: float32 round-trips exactly);
    - ``user_emb.npy`` / ``item_emb.npy`` (float32 ``[n, d]``) with ``user_tokens.npy`` /
      ``item_tokens.npy`` (the token of each row); all load with ``allow_pickle=False``;
    - ``embeddings.json``: model, dataset, checkpoint, epoch, source, ``"score": "dot"``.

    [PAD] is left out. Each file is written to a temporary name and renamed.

    Raises:
        FileExistsError: A file to write exists and ``overwrite`` is false (nothing written).
        ValueError: From :func:`embeddings`.
    """
    name = loaded.config["dataset"]
    files = {"useremb": f"{name}.useremb", "itememb": f"{name}.itememb",
             "user_emb": "user_emb.npy", "item_emb": "item_emb.npy",
             "user_tokens": "user_tokens.npy", "item_tokens": "item_tokens.npy",
             "manifest": "embeddings.json"}
    paths = {k: os.path.join(out_dir, f) for k, f in files.items()}
    if not overwrite:
        existing = [p for p in paths.values() if os.path.exists(p)]
        if existing:
            raise FileExistsError(f"{existing[0]}: exists (and {len(existing) - 1} more of the export's "
                                  f"files); choose another folder or overwrite")
    u, i, source = embeddings(loaded)
    users, items = loaded.user_tokens(), loaded.item_tokens()
    u, i = u[1:].numpy(), i[1:].numpy()
    os.makedirs(out_dir, exist_ok=True)
    write_feature_file(paths["useremb"], "uid", "user_emb", users, u, fmt="%.9g")
    write_feature_file(paths["itememb"], "iid", "item_emb", items, i, fmt="%.9g")
    _save_npy(paths["user_emb"], u)
    _save_npy(paths["item_emb"], i)
    _save_npy(paths["user_tokens"], np.array(users, dtype=str))
    _save_npy(paths["item_tokens"], np.array(items, dtype=str))
    manifest = {
        "model": loaded.config["model"], "dataset": name, "checkpoint": os.path.abspath(loaded.path),
        "epoch": loaded.epoch, "source": source, "score": "dot", "dim": int(u.shape[1]),
        "users": len(users), "items": len(items), "files": {k: files[k] for k in files if k != "manifest"},
    }
    tmp = f"{paths['manifest']}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, paths["manifest"])
    return paths


# -- command line ----------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_models.recommend",
        description="Top-k items for users, and embedding export, from a checkpoint of recbole_models.run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a saved/<model>-...pth file")
    parser.add_argument("--users", nargs="+", default=[], metavar="TOKEN",
                        help="user tokens as in the .inter files")
    parser.add_argument("--k", type=int, default=10, help="items per user")
    parser.add_argument("--mask", choices=sorted(MASKS), default="train",
                        help="items not recommended: the user's items in these splits")
    parser.add_argument("--export", metavar="DIR", help="write user/item embeddings to DIR")
    parser.add_argument("--overwrite", action="store_true", help="replace existing export files")
    parser.add_argument("--data_path", help="root folder holding <dataset>/ when the data moved")
    parser.add_argument("--config_files", nargs="+", default=None, help="YAML files replacing stored keys")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: RecBole's choice)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.users and not args.export:
        parser.error("nothing to do: give --users and/or --export")
    if args.k < 1:
        parser.error(f"argument --k: must be >= 1, got {args.k}")
    try:
        overrides = {} if args.data_path is None else {"data_path": args.data_path}
        if args.export and not args.overwrite:
            # Refuse before the minutes of loading, not after.
            target = os.path.join(args.export, "embeddings.json")
            if os.path.exists(target):
                raise FileExistsError(f"{target}: exists; choose another --export folder or --overwrite")
        loaded = load_model(args.checkpoint, config_files=args.config_files, device=args.device, **overrides)
        recs = top_k(loaded, args.users, k=args.k, mask=args.mask) if args.users else []
        paths = export_embeddings(loaded, args.export, overwrite=args.overwrite) if args.export else {}
    except (OSError, ValueError, KeyError) as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        print(f"error: {message}".splitlines()[0], file=sys.stderr)
        return 2
    if recs:
        print("user\trank\titem\tscore")
        for rec in recs:
            for rank, (item, score) in enumerate(zip(rec.items, rec.scores), start=1):
                print(f"{rec.user}\t{rank}\t{item}\t{score:.6g}")
    if paths:
        print(f"embeddings written to {args.export} ({', '.join(sorted(os.path.basename(p) for p in paths.values()))})",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
