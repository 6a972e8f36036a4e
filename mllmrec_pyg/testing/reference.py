r"""A faithful dense re-implementation of the reference MLLMRec item graph.

It follows the published model code step by step, dense matrices included:
an :math:`N \times N` cosine matrix, a dense top-k scatter, a dense users x items
interaction matrix for the Jaccard counts, and the normalisation as two
products with a dense diagonal matrix. It exists to check :mod:`mllmrec_pyg`
against, and as the baseline of ``benchmarks/graph_build.py``; it needs
:math:`O(N^2)` memory and :math:`O(N^3)` time, so keep :math:`N` small.
"""
from typing import Optional

import torch
from torch import Tensor


def dense_knn(scores: Tensor, k: int) -> Tensor:
    """Keeps each row's top-``k`` values in place, zero elsewhere."""
    values, columns = torch.topk(scores, k, dim=-1)
    return torch.zeros_like(scores).scatter_(-1, columns, values)


def reference_semantic_adjacency(x: Tensor, k: int, threshold: Optional[float]) -> Tensor:
    x_norm = x / x.norm(p=2, dim=-1, keepdim=True)
    adj = dense_knn(x_norm @ x_norm.t(), k)
    if threshold is not None:
        # The reference's two in-place assignments: below the threshold drops, the rest becomes 1.
        adj[adj < threshold] = 0.0
        adj[adj >= threshold] = 1.0
    else:
        adj[adj != 0] = 1.0
    return adj


def reference_jaccard_adjacency(inter_index: Tensor, num_users: int, num_items: int,
                                k: int) -> Tensor:
    """Reference Jaccard graph. Like the published code it zeroes the float32 entries
    equal to 1. With the 1e-7 in the denominator, n / (n + 1e-7) rounds to 1 only for
    n >= 2 users: the diagonal of single-user items survives at 0.99999988, and pairs
    of distinct items with the same audience of >= 2 users are zeroed too."""
    r = torch.zeros(num_items, num_users)
    r[inter_index[1], inter_index[0]] = 1.0
    shared = r @ r.t()
    audience = r.sum(dim=1, keepdim=True)
    jaccard = shared / (audience + audience.t() - shared + 1e-7)
    jaccard[jaccard == 1.0] = 0.0
    return dense_knn(jaccard, k)


def reference_laplacian(adj: Tensor) -> Tensor:
    r""":math:`D^{-1/2} A D^{-1/2}` with row sums, via dense diagonal matrices."""
    d_inv_sqrt = adj.sum(dim=-1).pow(-0.5)
    d_inv_sqrt[torch.isinf(d_inv_sqrt)] = 0.0
    d = torch.diagflat(d_inv_sqrt)
    return d @ adj @ d


def reference_item_graph(x: Tensor, inter_index: Optional[Tensor], num_users: int, k: int = 10,
                         threshold: Optional[float] = 0.7, k_cooc: Optional[int] = 10) -> Tensor:
    """The dense normalised item-item matrix :math:`L` of the reference model."""
    adj = reference_semantic_adjacency(x, k, threshold)
    if k_cooc is not None:
        adj = adj + reference_jaccard_adjacency(inter_index, num_users, x.size(0), k_cooc)
    return reference_laplacian(adj)


def reference_propagate(laplacian: Tensor, x: Tensor, num_layers: int = 1) -> Tensor:
    r""":math:`\sum_{l=0}^{L} L^l X`, as the reference item GCN."""
    out, h = x, x
    for _ in range(num_layers):
        h = laplacian @ h
        out = out + h
    return out
