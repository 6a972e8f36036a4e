"""Where the builders keep each item-item graph on a homogeneous ``Data``.

Each graph is kept as ``data.item_graphs[key] = {"edge_index": ..., "edge_weight": ...}``.
Separate top-level attributes such as ``knn_edge_index`` would have as many
entries as ``edge_index`` and PyG's transforms (``ToUndirected``,
``ToSparseTensor``, ``RandomLinkSplit``) would take them for edge attributes of
``edge_index``. A nested dict is neither a node nor an edge attribute, and PyG's
batching recurses into it: the inner ``edge_index`` is shifted by ``num_nodes``
and ``Batch.get_example`` restores it.
"""
from typing import Dict, Optional, Tuple

from torch import Tensor
from torch_geometric.data import Data

ITEM_GRAPHS = "item_graphs"


def keep_graph(data: Data, key: str, edge_index: Tensor, edge_weight: Tensor) -> None:
    # A new dict every time: BaseTransform shallow-copies `data`, so mutating the
    # dict in place would change the caller's object too.
    graphs: Dict[str, Dict[str, Tensor]] = dict(data[ITEM_GRAPHS]) if ITEM_GRAPHS in data else {}
    graphs[key] = {"edge_index": edge_index, "edge_weight": edge_weight}
    data[ITEM_GRAPHS] = graphs


def kept_graph(data: Data, key: str) -> Optional[Tuple[Tensor, Optional[Tensor]]]:
    graph = data[ITEM_GRAPHS].get(key) if ITEM_GRAPHS in data else None
    if graph is None:
        return None
    return graph["edge_index"], graph.get("edge_weight")
