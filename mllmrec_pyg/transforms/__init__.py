r"""Item-item graph builders as PyG transforms.

Compose them; each also works alone (its raw graph lands in ``edge_index`` /
``edge_weight``)::

    T.Compose([ThresholdKNN(k=10, threshold=0.7), JaccardCooccurrence(k=10), Union()])
"""
from mllmrec_pyg.transforms.jaccard_cooccurrence import JaccardCooccurrence, jaccard_cooccurrence_graph
from mllmrec_pyg.transforms.threshold_knn import ThresholdKNN, threshold_knn_graph
from mllmrec_pyg.transforms.union import Union, normalize_graph

__all__ = [
    "ThresholdKNN",
    "JaccardCooccurrence",
    "Union",
    "threshold_knn_graph",
    "jaccard_cooccurrence_graph",
    "normalize_graph",
]
