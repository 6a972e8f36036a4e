r"""A :class:`~torch_geometric.data.Data` for an item graph that also carries
user-item interactions, batched correctly by PyG's
:class:`~torch_geometric.loader.DataLoader`."""
from typing import Any

import torch
from torch_geometric.data import Data


class ItemGraphData(Data):
    r"""An item-item graph (nodes are items) plus the (user, item) interactions
    it was built from, stored as a ``[2, nnz]`` LongTensor under the attribute
    named :obj:`inter_attr` (default :obj:`"inter_index"`), with
    :obj:`num_users`.

    PyG's plain :class:`~torch_geometric.data.Data` increments every attribute
    whose name contains ``"index"`` by :obj:`num_nodes` (the item count) when
    graphs are batched, which shifts *user* ids by item counts. Here both rows
    are shifted by their own counts, like an edge type of a
    :class:`~torch_geometric.data.HeteroData` (or PyG's ``BipartiteData``
    example): in a batch of graphs :math:`g_1, g_2`, row 0 (users) of
    :math:`g_2` is shifted by :math:`g_1`'s :obj:`num_users` and row 1 (items)
    by :math:`g_1`'s :obj:`num_nodes`. :obj:`batch.num_users` then holds one
    count per graph (sum it for the batch's user count).

    :class:`mllmrec_pyg.transforms.JaccardCooccurrence` returns this class
    when given a plain :class:`Data`; build one directly as
    ``ItemGraphData(x=x, inter_index=ui, num_users=U)``.

    Args:
        inter_attr (str): Name of the interaction attribute.
            (default: :obj:`"inter_index"`)
        **kwargs: Attributes, as for :class:`~torch_geometric.data.Data`.
    """

    def __init__(self, *args, inter_attr: str = "inter_index", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Kept beside the store, not in it: a name is no graph attribute to batch.
        self.__dict__["_inter_attr"] = inter_attr

    @property
    def inter_attr(self) -> str:
        return self.__dict__.get("_inter_attr", "inter_index")

    def stores_as(self, data: "ItemGraphData") -> "ItemGraphData":
        # PyG calls this when it builds a Batch from graphs and an example from a Batch:
        # both must know which attribute holds the interactions.
        if isinstance(data, ItemGraphData):
            self.__dict__["_inter_attr"] = data.inter_attr
        return super().stores_as(data)

    def __cat_dim__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key == self.inter_attr:
            return -1  # [2, nnz]: concatenate interactions, whatever the name
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key == self.inter_attr:
            if "num_users" not in self:
                raise ValueError(f"`num_users` is missing: batching `{key}` shifts user ids by it")
            return torch.tensor([[int(self.num_users)], [int(self.num_nodes)]])
        return super().__inc__(key, value, *args, **kwargs)
