"""Summary statistics of an item-item graph built by :mod:`mllmrec_pyg.transforms`."""
from typing import Dict

import torch
from torch_geometric.data import Data


def _describe(edge_index: torch.Tensor, edge_weight, num_items: int) -> Dict[str, float]:
    per_item = torch.bincount(edge_index[1], minlength=num_items).float()
    stats = {
        "edges": int(edge_index.size(1)),
        "self_loops": int((edge_index[0] == edge_index[1]).sum()),
        "mean_neighbours": float(per_item.mean()),
        "min_neighbours": int(per_item.min()),
        "max_neighbours": int(per_item.max()),
        "items_without_edges": int((per_item == 0).sum()),
    }
    if edge_weight is not None and edge_weight.numel() > 0:
        stats["mean_weight"] = float(edge_weight.float().mean())
    return stats


def graph_statistics(data: Data, keys=("knn", "cooc", "refined")) -> Dict[str, Dict[str, float]]:
    """Per kept graph (``data.<key>_edge_index``): edges, self-loops, neighbours per item
    (edges arriving at the item, i.e. the length of its list), items without edges and
    mean weight; plus the overlap of the semantic and co-occurrence graphs."""
    num_items = data.num_items if "num_items" in data else data.num_nodes
    out = {}
    for key in keys:
        if f"{key}_edge_index" in data:
            out[key] = _describe(data[f"{key}_edge_index"], data.get(f"{key}_edge_weight"), num_items)
    if "knn_edge_index" in data and "cooc_edge_index" in data:
        a = data.knn_edge_index[0] * num_items + data.knn_edge_index[1]
        b = data.cooc_edge_index[0] * num_items + data.cooc_edge_index[1]
        out["overlap"] = {"edges_in_both": int(torch.isin(a, b).sum())}
    return out


def format_statistics(stats: Dict[str, Dict[str, float]]) -> str:
    lines = []
    for name, values in stats.items():
        parts = [f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v:,}" for k, v in values.items()]
        lines.append(f"{name:>8}: " + "  ".join(parts))
    return "\n".join(lines)
