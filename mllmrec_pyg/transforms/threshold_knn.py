r"""Semantic item-item graph: k-nearest neighbours by cosine similarity, denoised by a threshold."""
import warnings
from typing import Optional, Tuple, Union as TypingUnion

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import coalesce, to_undirected

from mllmrec_pyg.transforms._checks import check_features, check_k, check_k_fits, check_threshold
from mllmrec_pyg.transforms._store import keep_graph
from mllmrec_pyg.transforms._topk import dense_topk

# Elements of one similarity block: 2**25 float32 values = 128 MiB.
DEFAULT_BLOCK_ELEMENTS = 1 << 25
# Warn when more than this share of the items keeps no neighbour besides itself.
LONELY_SHARE_WARNING = 0.5


def _warn_if_lonely(edge_index: Tensor, num_items: int, threshold: Optional[float], k: int,
                    loop: bool) -> None:
    """Warns when most items keep no neighbour other than themselves (a threshold
    above nearly every similarity leaves a graph of self-loops, silently useless)."""
    if threshold is None or (loop and k == 1):  # k=1 with the self-loop asks for no neighbour
        return
    has_neighbour = torch.zeros(num_items, dtype=torch.bool, device=edge_index.device)
    has_neighbour[edge_index[1, edge_index[0] != edge_index[1]]] = True
    lonely = num_items - int(has_neighbour.sum())
    if lonely > LONELY_SHARE_WARNING * num_items:
        warnings.warn(
            f"ThresholdKNN: {lonely / num_items:.1%} of the items ({lonely:,} of {num_items:,}) keep no "
            f"neighbour other than themselves at threshold={threshold} (k={k}): their cosine "
            f"similarities to all other items are below it. Lower the threshold, or check the features.",
            UserWarning, stacklevel=3)


def threshold_knn_graph(
    x: Tensor,
    k: int,
    threshold: Optional[float] = None,
    weighted: bool = False,
    loop: bool = True,
    force_undirected: bool = False,
    block_size: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    r"""Functional form of :class:`ThresholdKNN`; returns ``(edge_index, edge_weight)``.

    ``x`` is ``[N, d]`` (any device); see :class:`ThresholdKNN` for the other arguments.
    The output edges are sorted by target item, then by source item.

    The graph is a constant of the features: it is computed under
    :func:`torch.no_grad`, so ``edge_weight`` carries no gradient even when
    ``x`` requires one (the top-:math:`k` selection has no useful gradient, and
    keeping the ``[B, N]`` similarity blocks for a backward pass would cost
    :math:`O(N^2)` memory). Warns (:class:`UserWarning`) when a threshold
    leaves more than half of the items without a neighbour besides themselves.
    """
    with torch.no_grad():
        edge_index, edge_weight = _threshold_knn(x, k, threshold, weighted, loop, force_undirected,
                                                 block_size)
    _warn_if_lonely(edge_index, x.size(0), threshold, k, loop)
    return edge_index, edge_weight


def _threshold_knn(x: Tensor, k: int, threshold: Optional[float], weighted: bool, loop: bool,
                   force_undirected: bool, block_size: Optional[int]) -> Tuple[Tensor, Tensor]:
    check_features(x, "x")
    k = check_k(k)
    check_k_fits(k, x.size(0))
    threshold = check_threshold(threshold)
    num_items = x.size(0)
    if block_size is None:
        block_size = max(1, DEFAULT_BLOCK_ELEMENTS // num_items)
    else:
        block_size = check_k(block_size, "block_size")

    x_norm = F.normalize(x, p=2.0, dim=1)
    block_size = min(block_size, num_items)
    # The [B, N] buffers are allocated once and reused: allocating them per block lets
    # glibc's adaptive mmap threshold move them onto the heap, which then grows by
    # megabytes per block (measured: 3.4 GB instead of 0.5 GB at N = 100,000).
    sim_buffer = x_norm.new_empty(block_size, num_items)
    mask_buffer = torch.empty(block_size, num_items, dtype=torch.bool, device=x.device)
    targets, sources, weights = [], [], []
    for start in range(0, num_items, block_size):
        end = min(start + block_size, num_items)
        sim = torch.mm(x_norm[start:end], x_norm.t(), out=sim_buffer[:end - start])  # [B, N]
        rows = torch.arange(start, end, device=x.device)
        if loop:
            # Item i takes one of its own k places even when k other items tie with
            # (or, by float rounding, exceed) s_ii, e.g. duplicates of item i.
            own = sim[rows - start, rows]
            sim[rows - start, rows] = float("inf")
        else:
            sim[rows - start, rows] = float("-inf")
        values, columns = dense_topk(sim, k, mask_out=mask_buffer[:end - start])
        if loop:
            values = torch.where(columns == rows.view(-1, 1), own.view(-1, 1), values)
        keep = values >= threshold if threshold is not None else torch.ones_like(values, dtype=torch.bool)
        targets.append(rows.view(-1, 1).expand(-1, k)[keep])
        sources.append(columns[keep])
        weights.append(values[keep] if weighted else torch.ones_like(values[keep]))

    # Messages flow from the neighbour (source) to the item whose list holds it (target).
    edge_index = torch.stack([torch.cat(sources), torch.cat(targets)])
    edge_weight = torch.cat(weights)
    if force_undirected:
        edge_index, edge_weight = to_undirected(edge_index, edge_weight, num_items, reduce="max")
    return coalesce(edge_index, edge_weight, num_items, sort_by_row=False)


@functional_transform("threshold_knn")
class ThresholdKNN(BaseTransform):
    r"""Builds the semantic item-item graph of MLLMRec ("threshold-controlled
    denoising") from item features :obj:`data[attr]` (functional name:
    :obj:`threshold_knn`).

    With :math:`\hat{\mathbf{x}}_i = \mathbf{x}_i / \|\mathbf{x}_i\|_2` and
    :math:`s_{ij} = \hat{\mathbf{x}}_i^\top \hat{\mathbf{x}}_j`,

    .. math::
        A_{ij} = \begin{cases} 1 \; (\text{or } s_{ij} \text{ if weighted}) &
        j \in \operatorname{top-}k_j(s_{ij}) \text{ and } s_{ij} \ge \epsilon \\
        0 & \text{otherwise.} \end{cases}

    By default this is the reference: the top-:math:`k` runs over the whole
    row, so item :math:`i` itself (:math:`s_{ii} = 1`) takes one of its
    :math:`k` places and every item gets a self-loop (unless :math:`\epsilon`
    exceeds the float value of :math:`s_{ii}`, i.e. :math:`\epsilon = 1`);
    kept edges are binary. The self-loop is guaranteed even when :math:`k` or
    more other items tie with item :math:`i` at similarity 1 (duplicate
    features): item :math:`i` plus the :math:`k - 1` most similar others. The
    reference's :func:`torch.topk` picks an unspecified subset of such a tie
    and may leave item :math:`i` out; that is the only case where the two differ.

    :math:`A` is not symmetric: row :math:`i` holds item :math:`i`'s own list.
    As a PyG graph, edge :math:`(j, i)` (``edge_index[:, e] = [j, i]``) carries
    :math:`A_{ij}`, so message passing aggregates at item :math:`i` over the
    items of its list. Among similarities tied at the :math:`k`-th place the
    lowest item index wins, on CPU and CUDA alike.

    Similarities are computed in row blocks on the features' device, under
    :func:`torch.no_grad` (the graph is a constant of the features; edge
    weights carry no gradient): memory is :math:`O(B \cdot N + N \cdot k)`,
    never :math:`N \times N`. A :class:`UserWarning` names the threshold and
    the share of items when more than half of the items keep no neighbour
    besides themselves.

    The graph is written to :obj:`data.edge_index` / :obj:`data.edge_weight`
    (raw weights, not normalised: follow with :class:`Union` to normalise) and
    kept as :obj:`data.item_graphs[key]`, a dict with :obj:`"edge_index"` and
    :obj:`"edge_weight"`, for :class:`Union` (a nested dict, so PyG's transforms
    do not take it for edge attributes of :obj:`data.edge_index`). If
    :obj:`data` has no :obj:`x`, :obj:`data.num_nodes` is set to the item count.
    On a :class:`~torch_geometric.data.HeteroData`, features are read from
    :obj:`data[node_type][attr]` and the graph is stored on the edge type
    :obj:`(node_type, key, node_type)`.

    Args:
        k (int): Neighbours per item (self included when :obj:`loop=True`).
            (default: :obj:`10`)
        threshold (float, optional): Similarity threshold :math:`\epsilon` in
            :math:`[-1, 1]`; :obj:`None` keeps all :math:`k` (plain k-NN as in
            FREEDOM, the paper's "w/o GD"). (default: :obj:`0.7`)
        weighted (bool): Keep :math:`s_{ij}` as edge weights instead of 1.
            (default: :obj:`False`)
        loop (bool): If :obj:`False`, item :math:`i` is excluded from its own
            candidates, so it gets :math:`k` other neighbours and no self-loop.
            (default: :obj:`True`)
        force_undirected (bool): Add reverse edges (a weight present in both
            directions keeps the maximum). (default: :obj:`False`)
        block_size (int, optional): Rows of the similarity matrix computed at
            once; default keeps a block at about 128 MiB. (default: :obj:`None`)
        key (str): Name under which the graph is kept. (default: :obj:`"knn"`)
        node_type (str): Node type read on a :class:`HeteroData`.
            (default: :obj:`"item"`)
        attr (str): Attribute holding the item features ``[num_items, d]``.
            (default: :obj:`"x"`)
    """

    def __init__(
        self,
        k: int = 10,
        threshold: Optional[float] = 0.7,
        weighted: bool = False,
        loop: bool = True,
        force_undirected: bool = False,
        block_size: Optional[int] = None,
        key: str = "knn",
        node_type: str = "item",
        attr: str = "x",
    ) -> None:
        self.k = check_k(k)
        self.threshold = check_threshold(threshold)
        self.weighted = weighted
        self.loop = loop
        self.force_undirected = force_undirected
        self.block_size = block_size
        self.key = key
        self.node_type = node_type
        self.attr = attr

    def forward(self, data: TypingUnion[Data, HeteroData]) -> TypingUnion[Data, HeteroData]:
        hetero = isinstance(data, HeteroData)
        if hetero:
            x = data[self.node_type].get(self.attr) if self.node_type in data.node_types else None
            name = f"data['{self.node_type}'].{self.attr}"
        else:
            x = data.get(self.attr)
            name = f"data.{self.attr}"
        check_features(x, name)
        edge_index, edge_weight = threshold_knn_graph(
            x, self.k, self.threshold, self.weighted, self.loop, self.force_undirected, self.block_size)
        if hetero:
            store = data[self.node_type, self.key, self.node_type]
            store.edge_index, store.edge_weight = edge_index, edge_weight
        else:
            if "x" not in data and "num_nodes" not in data:
                data.num_nodes = x.size(0)  # PyG could not infer it from `data.<attr>`
            keep_graph(data, self.key, edge_index, edge_weight)
            data.edge_index, data.edge_weight = edge_index, edge_weight
        return data

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(k={self.k}, threshold={self.threshold}, "
                f"weighted={self.weighted}, loop={self.loop}, "
                f"force_undirected={self.force_undirected}, block_size={self.block_size}, "
                f"key={self.key!r}, node_type={self.node_type!r}, attr={self.attr!r})")
