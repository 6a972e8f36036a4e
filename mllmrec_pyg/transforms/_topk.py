"""Row-wise top-k selection with a deterministic tie rule.

``torch.topk`` picks an unspecified member among equal values, and CPU and CUDA
can pick differently. The graph builders need the same graph on every device,
so among values tied at the k-th place the lowest column index wins.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def dense_topk(scores: Tensor, k: int, mask_out: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Top-``k`` of every row of a dense ``[B, N]`` block.

    Returns ``(values, columns)``, both ``[B, k]``. The selected *set* is fully
    determined: all values strictly above the k-th largest, then the lowest
    column indices among those equal to it. ``mask_out`` is an optional
    ``[B, N]`` bool buffer reused for the tie check (see ``threshold_knn_graph``).
    """
    values, columns = scores.topk(k, dim=1)
    kth = values[:, -1:]
    # Rows with more than k candidates >= the k-th value have a tie at the boundary.
    tied = (torch.ge(scores, kth, out=mask_out).sum(dim=1) > k).nonzero().view(-1)
    if tied.numel() > 0:
        block, kth_t = scores[tied], kth[tied]
        above = block > kth_t
        equal = block == kth_t
        need = k - above.sum(dim=1, keepdim=True)
        keep = above | (equal & (equal.cumsum(dim=1) <= need))
        cols = keep.nonzero()[:, 1].view(-1, k)  # exactly k per row, ascending columns
        columns[tied] = cols
        values[tied] = block.gather(1, cols)
    return values, columns


def sparse_topk(row: Tensor, col: Tensor, value: Tensor, k: int) -> Tensor:
    """Boolean mask keeping, per ``row``, the ``k`` entries of largest ``value``.

    Ties are broken by the lowest ``col``. Works on any device: three stable
    sorts realise the lexicographic order (row asc, value desc, col asc).
    """
    perm = torch.argsort(col, stable=True)
    perm = perm[torch.argsort(value[perm], descending=True, stable=True)]
    perm = perm[torch.argsort(row[perm], stable=True)]
    sorted_row = row[perm]
    # Rank of each entry inside its row = position - first position of that row.
    first = torch.ones_like(sorted_row, dtype=torch.bool)
    first[1:] = sorted_row[1:] != sorted_row[:-1]
    start = torch.cummax(torch.where(first, torch.arange(row.numel(), device=row.device),
                                     torch.zeros_like(sorted_row)), dim=0).values
    rank = torch.arange(row.numel(), device=row.device) - start
    mask = torch.zeros_like(row, dtype=torch.bool)
    mask[perm] = rank < k
    return mask
