r"""Audience co-occurrence item-item graph: Jaccard similarity of the items' user sets."""
from typing import Tuple, Union as TypingUnion

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import coalesce, degree

from mllmrec_pyg.data import ItemGraphData
from mllmrec_pyg.transforms._checks import check_interactions, check_k, check_k_fits
from mllmrec_pyg.transforms._store import keep_graph
from mllmrec_pyg.transforms._topk import sparse_topk


def _cooccurrence_counts_scipy(user: Tensor, item: Tensor, num_users: int, num_items: int):
    """``C = R^T R`` with scipy (CPU tensors in, CPU tensors out)."""
    r = sp.csr_matrix((np.ones(user.numel(), dtype=np.float32), (user.numpy(), item.numpy())),
                      shape=(num_users, num_items))
    c = (r.T.tocsr() @ r).tocoo()
    return (torch.from_numpy(c.row.astype(np.int64)), torch.from_numpy(c.col.astype(np.int64)),
            torch.from_numpy(c.data))


def _cooccurrence_counts_torch(user: Tensor, item: Tensor, num_users: int, num_items: int):
    """``C = R^T R`` with torch.sparse, on the tensors' own device (used for CUDA)."""
    ones = torch.ones(user.numel(), device=user.device)
    r = torch.sparse_coo_tensor(torch.stack([user, item]), ones, (num_users, num_items)).coalesce()
    c = torch.sparse.mm(r.t().coalesce(), r).coalesce()
    row, col = c.indices()
    return row, col, c.values()


def jaccard_cooccurrence_graph(
    inter_index: Tensor,
    num_users: int,
    num_items: int,
    k: int,
) -> Tuple[Tensor, Tensor]:
    r"""Functional form of :class:`JaccardCooccurrence`; returns ``(edge_index, edge_weight)``.

    ``inter_index`` is a ``[2, nnz]`` LongTensor of (user, item) rows (duplicates
    are counted once). Edges are sorted by target item, then source item.
    """
    check_interactions(inter_index, num_users, num_items, "inter_index")
    k = check_k(k)
    check_k_fits(k, num_items)
    # Collapse duplicate (user, item) rows: sets, not multisets.
    pairs = torch.unique(inter_index[0] * num_items + inter_index[1])
    user, item = pairs // num_items, pairs % num_items
    counts = _cooccurrence_counts_scipy if user.device.type == "cpu" else _cooccurrence_counts_torch
    row, col, shared = counts(user, item, num_users, num_items)
    row, col = row.to(inter_index.device), col.to(inter_index.device)
    shared = shared.to(inter_index.device, torch.float32)

    off_diagonal = row != col
    row, col, shared = row[off_diagonal], col[off_diagonal], shared[off_diagonal]
    audience = degree(item, num_items, dtype=torch.float32)
    jaccard = shared / (audience[row] + audience[col] - shared)

    keep = sparse_topk(row, col, jaccard, k)
    # Row i of the matrix is item i's list: edge (j -> i) carries J_ij.
    edge_index = torch.stack([col[keep], row[keep]])
    return coalesce(edge_index, jaccard[keep], num_items, sort_by_row=False)


@functional_transform("jaccard_cooccurrence")
class JaccardCooccurrence(BaseTransform):
    r"""Builds the audience co-occurrence graph of MLLMRec ("topology-aware
    enhancement") from user-item interactions (functional name:
    :obj:`jaccard_cooccurrence`).

    With :math:`\mathcal{U}_i` the set of users who interacted with item
    :math:`i` (use TRAINING interactions only),

    .. math::
        J_{ij} = \frac{|\mathcal{U}_i \cap \mathcal{U}_j|}
                      {|\mathcal{U}_i \cup \mathcal{U}_j|}, \qquad
        A^{c}_{ij} = J_{ij} \text{ if } j \in \operatorname{top-}k_{j \ne i}(J_{ij})
        \text{ and } J_{ij} > 0, \text{ else } 0.

    The diagonal is removed before the top-:math:`k`; items sharing no user
    are no edges, so an item may get fewer than :math:`k` neighbours. Ties at
    the :math:`k`-th place go to the lowest item index. As in
    :class:`ThresholdKNN`, edge :math:`(j, i)` carries :math:`A^c_{ij}`.

    Counts :math:`|\mathcal{U}_i \cap \mathcal{U}_j|` come from one sparse product
    :math:`R^\top R` (scipy on CPU, :obj:`torch.sparse` on CUDA): memory grows
    with the number of co-occurring pairs, never with items :math:`\times` users.

    Input: a :class:`~torch_geometric.data.Data` holding the interactions
    :obj:`data[attr]` (LongTensor ``[2, nnz]`` of (user, item) rows) and
    :obj:`num_users`; the number of items is :obj:`data.num_items` if set, else
    :obj:`data.num_nodes` if set, else :obj:`data.x.size(0)`. The graph goes to
    :obj:`data.edge_index` / :obj:`data.edge_weight` and is kept as
    :obj:`data.item_graphs[key]` (see :class:`ThresholdKNN`). A plain
    :class:`Data` comes back as a :class:`mllmrec_pyg.data.ItemGraphData`,
    so that PyG's :class:`~torch_geometric.loader.DataLoader` shifts the user
    row of :obj:`data[attr]` by :obj:`num_users` and the item row by the item
    count (a plain :class:`Data` would shift both by the item count). If
    :obj:`data` has no :obj:`x`, :obj:`data.num_nodes` is set to the item count.
    Or a :class:`~torch_geometric.data.HeteroData` with exactly one
    ``('user', *, 'item')`` edge type, whose :obj:`edge_index` holds the
    interactions: the graph is added as the edge type ``('item', key, 'item')``.

    Divergence from the reference code, on purpose: the reference computes
    :math:`J` in float32 with :math:`10^{-7}` added to the denominator and then
    zeroes the entries equal to 1, meaning to remove the diagonal. In float32,
    :math:`n / (n + 10^{-7})` is exactly 1 only for :math:`n \ge 2`, so the
    diagonal of an item with a single user survives (0.99999988) and can take
    one of its :math:`k` places, while pairs of distinct items with the same
    audience of two or more users are zeroed (measured on ml-100k in
    docs/graph.md). Here exactly the diagonal is removed and :math:`J` is exact.

    Args:
        k (int): Co-occurrence neighbours kept per item, :math:`k_c`.
            (default: :obj:`10`)
        key (str): Name under which the graph is kept. (default: :obj:`"cooc"`)
        user_type (str): User node type on a :class:`HeteroData`. (default: :obj:`"user"`)
        item_type (str): Item node type on a :class:`HeteroData`. (default: :obj:`"item"`)
        attr (str): Attribute holding the interactions on a :class:`Data`.
            (default: :obj:`"inter_index"`)
    """

    def __init__(self, k: int = 10, key: str = "cooc", user_type: str = "user",
                 item_type: str = "item", attr: str = "inter_index") -> None:
        self.k = check_k(k)
        self.key = key
        self.user_type = user_type
        self.item_type = item_type
        self.attr = attr

    def forward(self, data: TypingUnion[Data, HeteroData]) -> TypingUnion[Data, HeteroData]:
        if isinstance(data, HeteroData):
            return self._forward_hetero(data)
        if "num_items" in data:
            num_items = data.num_items
        elif "num_nodes" in data:
            num_items = data.num_nodes
        else:
            num_items = data.x.size(0) if "x" in data else None
        if num_items is None:
            raise ValueError("the number of items is unknown: set `data.num_items` or `data.x`")
        num_users = data.num_users if "num_users" in data else None
        inter_index = data.get(self.attr)
        check_interactions(inter_index, num_users, num_items, f"data.{self.attr}")
        edge_index, edge_weight = jaccard_cooccurrence_graph(
            inter_index, int(num_users), int(num_items), self.k)
        if type(data) is Data:
            data = ItemGraphData(inter_attr=self.attr, **data.to_dict())
        elif isinstance(data, ItemGraphData):
            data.__dict__["_inter_attr"] = self.attr  # `data` is BaseTransform's copy
        if "x" not in data and "num_nodes" not in data:
            data.num_nodes = int(num_items)
        keep_graph(data, self.key, edge_index, edge_weight)
        data.edge_index, data.edge_weight = edge_index, edge_weight
        return data

    def _forward_hetero(self, data: HeteroData) -> HeteroData:
        types = [et for et in data.edge_types if et[0] == self.user_type and et[2] == self.item_type]
        if len(types) != 1:
            raise ValueError(
                f"`data` must hold exactly one ('{self.user_type}', *, '{self.item_type}') edge type, "
                f"found {types or 'none'} among {data.edge_types}")
        inter_index = data[types[0]].get("edge_index")
        num_users = data[self.user_type].num_nodes
        num_items = data[self.item_type].num_nodes
        name = f"data[{types[0]}].edge_index"
        check_interactions(inter_index, num_users, num_items, name)
        edge_index, edge_weight = jaccard_cooccurrence_graph(inter_index, num_users, num_items, self.k)
        store = data[self.item_type, self.key, self.item_type]
        store.edge_index, store.edge_weight = edge_index, edge_weight
        return data

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(k={self.k}, key={self.key!r}, user_type={self.user_type!r}, "
                f"item_type={self.item_type!r}, attr={self.attr!r})")
