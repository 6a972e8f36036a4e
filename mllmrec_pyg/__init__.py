"""mllmrec_pyg: the PyTorch Geometric side of MLLMRec.

* :mod:`mllmrec_pyg.transforms` -- item-item graph builders (``ThresholdKNN``,
  ``JaccardCooccurrence``, ``Union``) as PyG transforms.
* :mod:`mllmrec_pyg.nn` -- LightGCN propagation (``LightGCNPropagation``).
* :mod:`mllmrec_pyg.data` -- ``ItemGraphData``, an item graph with interactions that batches right.
* :mod:`mllmrec_pyg.cli` -- the ``mllmrec`` command line.
"""

__version__ = "0.1.0"
