"""Neural network modules (message passing) of MLLMRec."""
from mllmrec_pyg.nn.lightgcn import LightGCN  # deprecated alias
from mllmrec_pyg.nn.lightgcn_propagation import LightGCNPropagation

__all__ = ["LightGCNPropagation", "LightGCN"]
