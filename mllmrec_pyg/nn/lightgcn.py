"""Deprecated name of :class:`mllmrec_pyg.nn.LightGCNPropagation`."""
import warnings

from mllmrec_pyg.nn.lightgcn_propagation import LightGCNPropagation


class LightGCN(LightGCNPropagation):
    """Deprecated alias of :class:`LightGCNPropagation` (same arguments, same
    results). The name collided with :class:`torch_geometric.nn.models.LightGCN`,
    a recommender with learnable embeddings and the *mean* of layers."""

    def __init__(self, *args, **kwargs) -> None:
        warnings.warn(
            "mllmrec_pyg.nn.LightGCN is deprecated (it is not torch_geometric.nn.LightGCN): "
            "use mllmrec_pyg.nn.LightGCNPropagation", DeprecationWarning, stacklevel=2)
        super().__init__(*args, **kwargs)
