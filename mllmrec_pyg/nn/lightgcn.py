r"""LightGCN propagation: the layer sum of repeated light graph convolutions."""
from typing import Optional

import torch
from torch import Tensor
from torch_geometric.nn import LGConv
from torch_geometric.typing import Adj, OptTensor


class LightGCN(torch.nn.Module):
    r"""Parameter-free LightGCN propagation with the layer sum used by MLLMRec:

    .. math::
        \mathbf{H} = \sum_{l=0}^{L} \hat{\mathbf{A}}^{l} \mathbf{X}
        \quad\text{(``combine="sum"``)}, \qquad
        \frac{1}{L+1} \sum_{l=0}^{L} \hat{\mathbf{A}}^{l} \mathbf{X}
        \quad\text{(``combine="mean"``, the LightGCN paper)}

    Each layer is PyG's :class:`~torch_geometric.nn.conv.LGConv`, a
    :class:`~torch_geometric.nn.conv.MessagePassing`:
    :math:`\mathbf{x}'_i = \sum_{(j, i) \in \mathcal{E}} e_{ji} \mathbf{x}_j`.
    With the graph of :class:`mllmrec_pyg.transforms.Union` (edge :math:`(j, i)`
    carries :math:`L_{ij}`) one layer gives :math:`\mathbf{H} = \mathbf{X} + L\mathbf{X}`,
    the reference item propagation. ``num_layers=0`` returns :math:`\mathbf{X}`.

    Args:
        num_layers (int): Number of propagation layers :math:`L`. (default: :obj:`1`)
        normalize (bool): Apply :func:`gcn_norm` (no self-loops) to the input
            weights in every layer; leave :obj:`False` for graphs that
            :class:`Union` already normalised. (default: :obj:`False`)
        combine (str): ``"sum"`` or ``"mean"`` of the :math:`L + 1` layers.
            (default: :obj:`"sum"`)

    Shapes:
        - **input:** node features :math:`(N, F)`; either ``edge_index``
          :math:`(2, E)` with optional ``edge_weight`` :math:`(E)`, or a sparse
          adjacency ``adj_t`` (:obj:`torch.sparse` or :obj:`SparseTensor`) with
          ``adj_t[i, j]`` the weight of the message :math:`j \to i`, e.g. from
          ``T.ToSparseTensor(attr="edge_weight", layout=torch.sparse_csr)``.
        - **output:** :math:`(N, F)`
    """

    def __init__(self, num_layers: int = 1, normalize: bool = False, combine: str = "sum") -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"`num_layers` must be a non-negative int, got {num_layers!r}")
        if combine not in ("sum", "mean"):
            raise ValueError(f"`combine` must be 'sum' or 'mean', got {combine!r}")
        self.num_layers = num_layers
        self.combine = combine
        self.convs = torch.nn.ModuleList([LGConv(normalize=normalize) for _ in range(num_layers)])

    def forward(self, x: Tensor, edge_index: Optional[Adj] = None,
                edge_weight: OptTensor = None) -> Tensor:
        if self.num_layers > 0 and edge_index is None:
            raise ValueError("`edge_index` (or a sparse adjacency) is required when num_layers > 0")
        out = x
        for conv in self.convs:
            x = conv(x, edge_index, edge_weight)
            out = out + x
        return out / (self.num_layers + 1) if self.combine == "mean" else out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_layers={self.num_layers}, combine={self.combine!r})"
