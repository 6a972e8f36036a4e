r"""LightGCN propagation: the layer sum of repeated light graph convolutions."""
from torch import Tensor
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import spmm


class LightGCNPropagation(MessagePassing):
    r"""Parameter-free LightGCN propagation of given node features, with the
    layer sum used by MLLMRec:

    .. math::
        \mathbf{H} = \sum_{l=0}^{L} \hat{\mathbf{A}}^{l} \mathbf{X}
        \quad\text{(``combine="sum"``)}, \qquad
        \frac{1}{L+1} \sum_{l=0}^{L} \hat{\mathbf{A}}^{l} \mathbf{X}
        \quad\text{(``combine="mean"``, the LightGCN paper)}

    One layer is the light graph convolution
    :math:`\mathbf{x}'_i = \sum_{(j, i) \in \mathcal{E}} e_{ji} \mathbf{x}_j`
    (PyG's :class:`~torch_geometric.nn.conv.LGConv`); like
    :class:`~torch_geometric.nn.conv.SGConv` or
    :class:`~torch_geometric.nn.conv.APPNP`, this one
    :class:`~torch_geometric.nn.conv.MessagePassing` applies it :math:`L`
    times. With the graph of :class:`mllmrec_pyg.transforms.Union` (edge
    :math:`(j, i)` carries :math:`L_{ij}`) one layer gives
    :math:`\mathbf{H} = \mathbf{X} + L\mathbf{X}`, the reference item
    propagation. ``num_layers=0`` returns :math:`\mathbf{X}`.

    Relation to PyG: :class:`torch_geometric.nn.models.LightGCN` is a whole
    recommender (learnable node embeddings, link prediction, BPR loss) whose
    :meth:`get_embedding` is this propagation with ``normalize=True`` and
    ``combine="mean"`` applied to its embedding table; this module has no
    parameters, takes any features (here: frozen text embeddings), and defaults
    to MLLMRec's layer *sum* over an already normalised graph. It was called
    ``mllmrec_pyg.nn.LightGCN`` before; that name is a deprecated alias.

    Args:
        num_layers (int): Number of propagation layers :math:`L`. (default: :obj:`1`)
        normalize (bool): Apply :func:`gcn_norm` (no self-loops) to the input
            weights, once per call; leave :obj:`False` for graphs that
            :class:`Union` already normalised. (default: :obj:`False`)
        combine (str): ``"sum"`` or ``"mean"`` of the :math:`L + 1` layers.
            (default: :obj:`"sum"`)
        **kwargs (optional): Additional arguments of
            :class:`~torch_geometric.nn.conv.MessagePassing` (``aggr`` is
            ``"add"``).

    Shapes:
        - **input:** node features :math:`(N, F)`; either ``edge_index``
          :math:`(2, E)` with optional ``edge_weight`` :math:`(E)`, or a sparse
          adjacency ``adj_t`` (:obj:`torch.sparse` or :obj:`SparseTensor`) with
          ``adj_t[i, j]`` the weight of the message :math:`j \to i`, e.g. from
          ``T.ToSparseTensor(attr="edge_weight", layout=torch.sparse_csr)``.
        - **output:** :math:`(N, F)`
    """

    def __init__(self, num_layers: int = 1, normalize: bool = False, combine: str = "sum",
                 **kwargs) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"`num_layers` must be a non-negative int, got {num_layers!r}")
        if combine not in ("sum", "mean"):
            raise ValueError(f"`combine` must be 'sum' or 'mean', got {combine!r}")
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        self.num_layers = num_layers
        self.normalize = normalize
        self.combine = combine

    def forward(self, x: Tensor, edge_index: Adj = None, edge_weight: OptTensor = None) -> Tensor:
        if self.num_layers == 0:
            return x
        if edge_index is None:
            raise ValueError("`edge_index` (or a sparse adjacency) is required when num_layers > 0")
        if self.normalize and isinstance(edge_index, SparseTensor):
            edge_index = gcn_norm(edge_index, None, x.size(self.node_dim), add_self_loops=False,
                                  flow=self.flow, dtype=x.dtype)
        elif self.normalize:
            # A torch.sparse adjacency comes back as (adj, None).
            edge_index, edge_weight = gcn_norm(edge_index, edge_weight, x.size(self.node_dim),
                                               add_self_loops=False, flow=self.flow, dtype=x.dtype)
        out = x
        for _ in range(self.num_layers):
            x = self.propagate(edge_index, x=x, edge_weight=edge_weight)
            out = out + x
        return out / (self.num_layers + 1) if self.combine == "mean" else out

    def message(self, x_j: Tensor, edge_weight: OptTensor) -> Tensor:
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j

    def message_and_aggregate(self, adj_t: Adj, x: Tensor) -> Tensor:
        return spmm(adj_t, x, reduce=self.aggr)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(num_layers={self.num_layers}, "
                f"normalize={self.normalize}, combine={self.combine!r})")
