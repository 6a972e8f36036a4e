"""The paper's figures as commands (``python -m recbole_models.figures``, docs/experiments.md).

- :mod:`~recbole_models.figures.edge_hist`: similarity histogram of the plain
  k-NN item graph vs the thresholded one (paper Fig. 1b), shares printed.
- :mod:`~recbole_models.figures.tsne`: t-SNE of users' learned representations
  from trained checkpoints, with alignment and uniformity
  (:mod:`~recbole_models.figures.representations`).
"""
