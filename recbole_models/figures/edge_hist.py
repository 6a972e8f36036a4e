r"""Edge-similarity histogram of the plain k-NN item graph and of the thresholded one
(paper Fig. 1b).

For item features :math:`X` (one row per item) and :math:`s_{ij} = \cos(x_i, x_j)`:

- plain k-NN: item :math:`i`'s edges are its top-:math:`k` most similar items
  (``threshold_knn_graph(x, k, threshold=None, weighted=True)``);
- thresholded: the same edges kept only where :math:`s_{ij} \ge \epsilon`
  (``threshold_knn_graph(x, k, threshold=eps, weighted=True)``), MLLMRec's
  threshold-controlled denoising.

As in MLLMRec, :math:`k` counts the item itself (similarity 1); those self-loops
say nothing about neighbours and are left out of the histogram and the shares
(``include_self=True`` keeps them). Printed for each graph: the number of edges,
the share with :math:`s_{ij} < 0.5` (``below``; the paper's number) and the mean
similarity; the PNG overlays both histograms as percentages of each graph's edges.
"""
import os
from typing import Dict, Optional

import numpy as np
import torch

from mllmrec_pyg.datasets.mmrec import read_feature_file
from mllmrec_pyg.transforms import threshold_knn_graph

__all__ = ["edge_similarities", "edge_histogram"]


def edge_similarities(x: torch.Tensor, k: int, threshold: Optional[float],
                      include_self: bool = False) -> np.ndarray:
    """Cosine similarities of the edges of the (thresholded) k-NN graph of ``x`` [N, d]."""
    edge_index, weight = threshold_knn_graph(x, k, threshold, weighted=True)
    if not include_self:
        weight = weight[edge_index[0] != edge_index[1]]
    return weight.numpy().astype(np.float64)


def edge_histogram(features: str, k: int, threshold: float, out: str, below: float = 0.5,
                   include_self: bool = False, bins: int = 40, title: Optional[str] = None) -> Dict:
    """Writes the PNG ``out``; returns ``{"plain": stats, "thresholded": stats}`` with
    ``edges``, ``share_below`` and ``mean`` per graph.

    Args:
        features: a RecBole feature file (``<dataset>.itememb``; docs/recbole.md).
        k: neighbours per item, the item itself included (MLLMRec's ``knn_k``).
        threshold: :math:`\epsilon` of the thresholded graph.
        out: the PNG path.
        below: the similarity under which edges are counted as weak (paper: 0.5).
        include_self: count the self-loops too.
        bins: histogram bins over [min similarity, 1].
        title: figure title (default names the file, k and ε).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens, feats = read_feature_file(features)
    if k < 2 or k > len(tokens):
        raise ValueError(f"k must be in [2, {len(tokens)}] (the item itself is one of its k), got {k}")
    x = torch.from_numpy(feats)
    sims = {"plain": edge_similarities(x, k, None, include_self),
            "thresholded": edge_similarities(x, k, threshold, include_self)}
    stats = {}
    for name, s in sims.items():
        stats[name] = {"edges": int(s.size), "share_below": float((s < below).mean()) if s.size else float("nan"),
                       "mean": float(s.mean()) if s.size else float("nan")}
    stats["removed_by_threshold"] = 1 - stats["thresholded"]["edges"] / max(stats["plain"]["edges"], 1)

    lo = min(float(sims["plain"].min()), 0.0)
    edges = np.linspace(lo, 1.0, bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, s), colour in zip(sims.items(), ("tab:grey", "tab:blue")):
        label = (f"{'plain k-NN' if name == 'plain' else f'thresholded (ε = {threshold})'}: "
                 f"{stats[name]['edges']:,} edges, {100 * stats[name]['share_below']:.1f}% below {below}")
        weights = np.full(s.size, 100.0 / max(s.size, 1))
        ax.hist(s, bins=edges, weights=weights, histtype="stepfilled" if name == "plain" else "step",
                alpha=0.5 if name == "plain" else 1.0, color=colour, linewidth=2, label=label)
    ax.axvline(below, color="red", linestyle="--", linewidth=1, label=f"similarity {below}")
    ax.set_xlabel("cosine similarity of the two items of an edge")
    ax.set_ylabel("share of the graph's edges (%)")
    ax.set_title(title or f"{os.path.basename(features)}: k-NN edges (k = {k}"
                          f"{', self-loops excluded' if not include_self else ''})", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return stats
