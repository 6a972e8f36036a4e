"""Summary statistics of an item-item graph built by :mod:`mllmrec_pyg.transforms`."""
from typing import Dict

import torch
from torch_geometric.data import Data

from mllmrec_pyg.transforms._store import kept_graph


def _describe(edge_index: torch.Tensor, edge_weight, num_items: int) -> Dict[str, float]:
    per_item = torch.bincount(edge_index[1], minlength=num_items).float()
    others = edge_index[1, edge_index[0] != edge_index[1]]
    has_neighbour = torch.bincount(others, minlength=num_items) > 0
    stats = {
        "edges": int(edge_index.size(1)),
        "self_loops": int((edge_index[0] == edge_index[1]).sum()),
        "mean_neighbours": float(per_item.mean()),
        "min_neighbours": int(per_item.min()),
        "max_neighbours": int(per_item.max()),
        "items_without_edges": int((per_item == 0).sum()),
        # Items whose list is empty or holds only themselves: the graph does nothing for them.
        "items_without_neighbours": int((~has_neighbour).sum()),
    }
    if edge_weight is not None and edge_weight.numel() > 0:
        stats["mean_weight"] = float(edge_weight.float().mean())
    return stats


def graph_statistics(data: Data, keys=("knn", "cooc", "refined")) -> Dict[str, Dict[str, float]]:
    """Per kept graph (``data.item_graphs[key]``): edges, self-loops, neighbours per item
    (edges arriving at the item, i.e. the length of its list), items without edges, items
    without a neighbour other than themselves, and mean weight; plus the overlap of the
    semantic and co-occurrence graphs."""
    num_items = data.num_items if "num_items" in data else data.num_nodes
    out = {}
    for key in keys:
        graph = kept_graph(data, key)
        if graph is not None:
            out[key] = _describe(graph[0], graph[1], num_items)
    knn, cooc = kept_graph(data, "knn"), kept_graph(data, "cooc")
    if knn is not None and cooc is not None:
        a = knn[0][0] * num_items + knn[0][1]
        b = cooc[0][0] * num_items + cooc[0][1]
        out["overlap"] = {"edges_in_both": int(torch.isin(a, b).sum())}
    return out


def format_statistics(stats: Dict[str, Dict[str, float]]) -> str:
    lines = []
    for name, values in stats.items():
        parts = [f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v:,}" for k, v in values.items()]
        lines.append(f"{name:>8}: " + "  ".join(parts))
    return "\n".join(lines)
