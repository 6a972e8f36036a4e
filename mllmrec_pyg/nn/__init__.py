"""Neural network modules (message passing) of MLLMRec."""
from mllmrec_pyg.nn.lightgcn import LightGCN

__all__ = ["LightGCN"]
