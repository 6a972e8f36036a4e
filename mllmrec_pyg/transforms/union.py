r"""Merge the item-item graphs built before it and normalise the result."""
from typing import Optional, Sequence, Union as TypingUnion

import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import coalesce, scatter

from mllmrec_pyg.transforms._store import keep_graph, kept_graph

NORMALIZATIONS = ("row", "rw", None)


def normalize_graph(edge_index: Tensor, edge_weight: Tensor, num_nodes: int,
                    normalization: Optional[str] = "row"):
    r"""Normalises a weighted graph whose edge :math:`(j, i)` carries :math:`A_{ij}`.

    With :math:`d_i = \sum_j A_{ij}` (row sums, i.e. the weight arriving at :math:`i`):

    * ``"row"`` (the reference): :math:`L_{ij} = d_i^{-1/2} A_{ij} d_j^{-1/2}`.
      Because :math:`A` is not symmetric, :math:`d_j` is item :math:`j`'s own row
      sum, not its in-degree. This is PyG's :func:`gcn_norm` without added self-loops.
    * ``"rw"``: :math:`L_{ij} = A_{ij} / d_i` (a weighted mean over the list).
    * :obj:`None`: :math:`L = A`.

    An item with :math:`d_i = 0` gets a zero row (:math:`0^{-1/2}` is taken as 0).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}")
    if normalization == "row":
        return gcn_norm(edge_index, edge_weight, num_nodes, add_self_loops=False,
                        dtype=edge_weight.dtype)
    if normalization == "rw":
        deg = scatter(edge_weight, edge_index[1], 0, dim_size=num_nodes, reduce="sum")
        inv = deg.reciprocal().masked_fill_(deg == 0, 0.0)
        return edge_index, edge_weight * inv[edge_index[1]]
    return edge_index, edge_weight


@functional_transform("graph_union")
class Union(BaseTransform):
    r"""Merges the item-item graphs kept by the builders before it (by default
    :class:`ThresholdKNN`'s ``"knn"`` and :class:`JaccardCooccurrence`'s
    ``"cooc"``) and normalises the sum (functional name: :obj:`graph_union`).

    .. math::
        A = A^{s} + A^{c}, \qquad
        L = D^{-1/2} A D^{-1/2}, \quad D = \operatorname{diag}\Big(\sum_j A_{ij}\Big)

    Weights add where both graphs hold the edge. Missing keys are skipped (so
    ``Compose([ThresholdKNN(...), Union()])`` is the paper's "w/o TE"), but at
    least one must be present. The result goes to :obj:`data.edge_index` /
    :obj:`data.edge_weight`, ready for
    :class:`mllmrec_pyg.nn.LightGCNPropagation`; the unnormalised sum is kept
    as :obj:`data.item_graphs[out_key]` (a dict with :obj:`"edge_index"` and
    :obj:`"edge_weight"`, like the builders' graphs).

    Items left without any edge get a zero row in :math:`L`: after LightGCN's
    layer sum, such an item keeps exactly its input features
    (:math:`\mathbf{h}_i = \mathbf{x}_i`).

    On a :class:`~torch_geometric.data.HeteroData`, the ``(node_type, key,
    node_type)`` edge types are merged into ``(node_type, out_key, node_type)``.

    Args:
        keys (Sequence[str]): Graphs to merge. (default: :obj:`("knn", "cooc")`)
        normalization (str, optional): ``"row"`` (reference), ``"rw"`` or
            :obj:`None`; see :func:`normalize_graph`. (default: :obj:`"row"`)
        out_key (str): Name of the merged graph. (default: :obj:`"refined"`)
        node_type (str): Node type on a :class:`HeteroData`. (default: :obj:`"item"`)
    """

    def __init__(self, keys: Sequence[str] = ("knn", "cooc"), normalization: Optional[str] = "row",
                 out_key: str = "refined", node_type: str = "item") -> None:
        if isinstance(keys, str) or len(keys) == 0:
            raise ValueError(f"`keys` must be a non-empty sequence of graph names, got {keys!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"`normalization` must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.keys = tuple(keys)
        self.normalization = normalization
        self.out_key = out_key
        self.node_type = node_type

    def forward(self, data: TypingUnion[Data, HeteroData]) -> TypingUnion[Data, HeteroData]:
        hetero = isinstance(data, HeteroData)
        graphs = []
        for key in self.keys:
            if hetero:
                et = (self.node_type, key, self.node_type)
                if et in data.edge_types:
                    graphs.append((data[et].edge_index, data[et].get("edge_weight")))
            elif kept_graph(data, key) is not None:
                graphs.append(kept_graph(data, key))
        if not graphs:
            where = "edge types" if hetero else "entries of `data.item_graphs`"
            raise ValueError(f"`Union` found none of the graphs {self.keys} ({where}); "
                             f"run ThresholdKNN and/or JaccardCooccurrence before it")
        num_nodes = data[self.node_type].num_nodes if hetero else data.num_nodes
        edge_index = torch.cat([ei for ei, _ in graphs], dim=1)
        edge_weight = torch.cat([
            ew if ew is not None else torch.ones(ei.size(1), device=ei.device) for ei, ew in graphs])
        edge_index, edge_weight = coalesce(edge_index, edge_weight, num_nodes, reduce="sum",
                                           sort_by_row=False)
        norm_index, norm_weight = normalize_graph(edge_index, edge_weight, num_nodes, self.normalization)
        if hetero:
            store = data[self.node_type, self.out_key, self.node_type]
            store.edge_index, store.edge_weight = norm_index, norm_weight
        else:
            keep_graph(data, self.out_key, edge_index, edge_weight)
            data.edge_index, data.edge_weight = norm_index, norm_weight
        return data

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(keys={self.keys}, normalization={self.normalization!r}, "
                f"out_key={self.out_key!r}, node_type={self.node_type!r})")
