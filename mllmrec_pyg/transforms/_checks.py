"""Input validation shared by the graph builders.

Every check raises a ``TypeError`` or ``ValueError`` whose message names the
argument or the ``Data`` attribute at fault, so a user knows what to fix.
"""
from typing import Optional

import torch
from torch import Tensor


def check_k(k, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"`{name}` must be an int, got {type(k).__name__}")
    if k <= 0:
        raise ValueError(f"`{name}` must be positive, got {k}")
    return k


def check_k_fits(k: int, num_items: int, name: str = "k") -> None:
    if k >= num_items:
        raise ValueError(
            f"`{name}`={k} must be smaller than the number of items ({num_items}); "
            f"with k >= N every item links to every other item, which is no k-NN graph")


def check_features(x: Optional[Tensor], name: str = "data.x") -> Tensor:
    """Checks a float feature matrix ``[N, d]`` with finite values and no all-zero row."""
    if x is None:
        raise ValueError(f"`{name}` is missing: the semantic graph needs item features [num_items, dim]")
    if not isinstance(x, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"`{name}` must have shape [num_items, dim], got {tuple(x.shape)}")
    if x.size(0) == 0 or x.size(1) == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(x.shape)})")
    bad = ~torch.isfinite(x).all(dim=1)
    if bad.any():
        rows = bad.nonzero().view(-1)[:5].tolist()
        raise ValueError(f"`{name}` has NaN or inf values in {int(bad.sum())} row(s), e.g. rows {rows}")
    zero = (x == 0).all(dim=1)
    if zero.any():
        rows = zero.nonzero().view(-1)[:5].tolist()
        raise ValueError(
            f"`{name}` has {int(zero.sum())} all-zero row(s), e.g. rows {rows}: "
            f"cosine similarity is undefined for them")
    return x


def check_interactions(inter_index: Optional[Tensor], num_users, num_items: Optional[int],
                       name: str = "data.inter_index") -> Tensor:
    """Checks a ``[2, nnz]`` LongTensor of (user, item) pairs within range."""
    if inter_index is None:
        raise ValueError(f"`{name}` is missing: the co-occurrence graph needs (user, item) "
                         f"interactions as a LongTensor of shape [2, num_interactions]")
    if not isinstance(inter_index, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(inter_index).__name__}")
    if inter_index.dtype != torch.long:
        raise TypeError(f"`{name}` must have dtype torch.long, got {inter_index.dtype}")
    if inter_index.dim() != 2 or inter_index.size(0) != 2:
        raise ValueError(f"`{name}` must have shape [2, num_interactions], got {tuple(inter_index.shape)}")
    if inter_index.size(1) == 0:
        raise ValueError(f"`{name}` holds no interactions")
    if num_users is None:
        raise ValueError("`num_users` is missing (set `data.num_users`)")
    if int(inter_index.min()) < 0:
        raise ValueError(f"`{name}` has negative indices")
    max_user = int(inter_index[0].max())
    if max_user >= num_users:
        raise ValueError(f"`{name}` has user index {max_user} >= num_users={num_users}")
    if num_items is not None:
        max_item = int(inter_index[1].max())
        if max_item >= num_items:
            raise ValueError(f"`{name}` has item index {max_item} >= num_items={num_items}")
    return inter_index


def check_threshold(threshold, name: str = "threshold"):
    """``None`` or a cosine similarity in [-1, 1]."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"`{name}` must be a float or None, got {type(threshold).__name__}")
    if not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"`{name}` must lie in [-1, 1] (a cosine similarity), got {threshold}")
    return float(threshold)
