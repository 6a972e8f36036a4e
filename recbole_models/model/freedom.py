r"""
FREEDOM
################################################

Reference:
    Xin Zhou and Zhiqi Shen. "A Tale of Two Graphs: Freezing and Denoising Graph
    Structures for Multimodal Recommendation." ACM MM 2023.
    Reference code: ``src/models/freedom.py`` of github.com/enoche/MMRec (consulted for
    behaviour; this file is written from the paper).

Two graphs. The item-item graph is built once from the raw modality features and
frozen; the user-item graph is denoised by pruning a new random subset of its edges
every epoch, preferring edges between low-degree nodes.

.. math::
    S^m_{ij} &= \mathbb{1}[j \in \text{top-}k(\cos(\mathbf{x}^m_i, \mathbf{x}^m_{\cdot}))]
        \ (\text{self included}), \qquad
    \tilde S^m = D_m^{-1/2} S^m D_m^{-1/2},\ D_m = \operatorname{diag}(S^m\mathbf{1}) \\
    S &= \textstyle\sum_m w_m \tilde S^m, \qquad
    \mathbf{H} = S^{L_{mm}}\,\mathbf{E}_I \\
    [\mathbf{Z}_U; \mathbf{Z}_I] &= \tfrac{1}{L_{ui}+1}\textstyle\sum_{l=0}^{L_{ui}}
        \hat{A}_\rho^{\,l}\,[\mathbf{E}_U; \mathbf{E}_I], \qquad
    \mathbf{e}_u = \mathbf{z}_u, \quad \mathbf{e}_i = \mathbf{z}_i + \mathbf{h}_i \\
    \mathcal{L} &= \mathrm{BPR}(\mathbf{e}_u, \mathbf{e}_i, \mathbf{e}_j)
        + \lambda \textstyle\sum_m \mathrm{BPR}(\mathbf{e}_u, W_m\mathbf{x}^m_i + b_m,
        W_m\mathbf{x}^m_j + b_m), \qquad
    \mathrm{BPR}(u, i, j) = -\operatorname{mean}\log\sigma(u^\top i - u^\top j)

:math:`\mathbf{E}_U, \mathbf{E}_I` are ID embeddings. :math:`\hat{A}_\rho` is the
training bipartite graph after **degree-sensitive edge pruning**: each epoch
:math:`\lfloor(1-\rho)\,|E|\rfloor` distinct edges are drawn without replacement with
probability proportional to :math:`1/\sqrt{d_u d_i}` (``torch.multinomial``), and the
kept graph is symmetric-normalised again on its own degrees. Evaluation uses the full
graph :math:`\hat{A}`. The modality features :math:`\mathbf{x}^m` are trainable (MMRec
loads them with ``freeze=False``); they enter the score only through the frozen graph,
and training only through the auxiliary BPR term.

Modalities: one graph per modality. One modality: :math:`S = \tilde S^1`. Several:
the modality named ``image`` gets :math:`w = ` ``mm_image_weight`` and the others share
:math:`1-w` equally (the paper's two modalities: :math:`0.1\,\tilde S^{v} + 0.9\,\tilde S^{t}`);
without an ``image`` modality all get equal weights.

"+GR" (``graph_refinement: True``): :math:`S^m` is MLLMRec's refined graph of
modality :math:`m` instead of its k-NN graph (:meth:`MultimodalRecommender.item_item_adjacency`);
normalisation and mixing are unchanged.

Epochs and determinism: RecBole's trainer has no per-epoch hook; the pruning runs in
:meth:`pre_epoch_processing`, which the base calls from ``model.train()`` (called once
at the start of every training epoch by RecBole's ``Trainer``). The draw of epoch
:math:`e` uses a generator seeded by (``seed``, :math:`e`) only, so two runs with one
seed prune identically.

Config keys (defaults in ``recbole_models/yaml/freedom.yaml``):

- ``embedding_size`` (int): ID embedding size, also the projection size of the
  modality features (64).
- ``knn_k`` (int): neighbours per item in each modality's k-NN graph, self included (10).
- ``n_mm_layers`` (int): :math:`L_{mm}`, propagations over :math:`S` (1).
- ``n_ui_layers`` (int): :math:`L_{ui}`, LightGCN layers on the user-item graph (2).
- ``mm_image_weight`` (float): :math:`w` of the ``image`` graph (0.1).
- ``dropout`` (float): :math:`\rho`, share of user-item edges pruned per epoch
  (0.8; reference grid {0.8, 0.9}); 0 keeps the full graph.
- ``reg_weight`` (float): :math:`\lambda` (1e-4; reference grid {0, 1e-5, 1e-4, 1e-3}).
- ``use_modalities``, ``graph_refinement``, ``knn_threshold``, ``cooc_k``: see
  :class:`~recbole_models.model.multimodal.MultimodalRecommender`.

Where we differ from the reference code, deliberately:

- The reference caches the mixed graph in ``mm_adj_freedomdsp_{k}_{w}.pt`` keyed
  only by ``k`` and ``w`` (a new feature file silently reuses the stale graph); we
  build it from the features every time (seconds at Baby size).
- The reference keys ``feat_embed_dim`` (a separate size, which must equal
  ``embedding_size`` for its BPR term to typecheck), ``lambda_coeff``, ``cf_model``,
  ``degree_ratio`` and ``weight_size`` are read or listed but change nothing: dropped.
- The reference projects every item's features each step and then indexes the batch;
  we project only the batch's items (the same loss and gradients).
- Pruning draws from a per-epoch generator rather than the global one (see above).
"""
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn

from recbole_models.model.multimodal import (MultimodalRecommender, bpr, lightgcn_mean, normalize_adjacency,
                                             sparse_from_edges)


def modality_weights(names: List[str], image_weight: float) -> Dict[str, float]:
    r"""Mixing weight of each modality's normalised graph: ``image`` gets ``image_weight``
    and the others share the rest equally; one modality gets 1; without ``image``, equal."""
    if len(names) == 1:
        return {names[0]: 1.0}
    if "image" not in names:
        return {n: 1.0 / len(names) for n in names}
    rest = (1.0 - image_weight) / (len(names) - 1)
    return {n: (image_weight if n == "image" else rest) for n in names}


class FREEDOM(MultimodalRecommender):
    r"""FREEDOM: frozen multimodal item graph + degree-sensitively pruned LightGCN."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = int(config["embedding_size"])
        self.knn_k = int(config["knn_k"])
        self.n_mm_layers = int(config["n_mm_layers"])
        self.n_ui_layers = int(config["n_ui_layers"])
        self.mm_image_weight = float(config["mm_image_weight"])
        self.dropout = float(config["dropout"])
        self.reg_weight = float(config["reg_weight"])
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"config `dropout` must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.mm_image_weight <= 1.0:
            raise ValueError(f"config `mm_image_weight` must be in [0, 1], got {self.mm_image_weight!r}")

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        # Trainable copies of the features (MMRec: Embedding.from_pretrained(freeze=False)).
        self.features = nn.ParameterDict({m: nn.Parameter(x.clone()) for m, x in self.modality_features.items()})
        self.projections = nn.ModuleDict({m: nn.Linear(x.size(1), self.embedding_size)
                                          for m, x in self.modality_features.items()})

        # The frozen item-item graph S, from the raw features.
        self.weights = modality_weights(self.modalities, self.mm_image_weight)
        self.register_sparse("mm_adj", self.mixed_item_graph())

        # Full training graph (evaluation) and the pruning distribution over its edges.
        self.register_sparse("norm_adj", self.user_item_adjacency())
        u, i = self.inter_index
        deg_u = torch.bincount(u, minlength=self.n_users).float()
        deg_i = torch.bincount(i, minlength=self.n_items).float()
        self.register_buffer("edge_prob", (deg_u[u] * deg_i[i]).rsqrt(), persistent=False)
        self.register_buffer("ui_edges", self.inter_index.clone(), persistent=False)
        self._pruned = False

    # -- graphs ---------------------------------------------------------------------------
    def mixed_item_graph(self) -> Tensor:
        r""":math:`S = \sum_m w_m D_m^{-1/2} S^m D_m^{-1/2}` (sparse ``[n_items, n_items]``)."""
        mixed = None
        for m in self.modalities:
            part = normalize_adjacency(self.item_item_adjacency(self.modality_features[m], self.knn_k), "row")
            part = part * self.weights[m]
            mixed = part if mixed is None else mixed + part
        return mixed.coalesce()

    def sample_edges(self, epoch: int, n_keep: int = None) -> Tensor:
        r"""Ids of the training edges kept in epoch ``epoch``: ``n_keep`` (default
        :math:`\lfloor(1-\rho)|E|\rfloor`) distinct ones, drawn with probability
        :math:`\propto 1/\sqrt{d_u d_i}` by a generator seeded from (seed, epoch)."""
        if n_keep is None:
            n_keep = int(self.edge_prob.numel() * (1.0 - self.dropout))
        generator = self.epoch_generator(epoch, self.edge_prob.device)
        return torch.multinomial(self.edge_prob, n_keep, replacement=False, generator=generator)

    def pruned_adjacency(self, keep: Tensor) -> Tensor:
        r"""Symmetric-normalised bipartite graph of the kept training edges ``keep``."""
        u, i = self.ui_edges.index_select(1, keep)
        n = self.n_users + self.n_items
        src = torch.cat([u, i + self.n_users])
        dst = torch.cat([i + self.n_users, u])
        adj = sparse_from_edges(torch.stack([src, dst]), torch.ones_like(src, dtype=torch.float), n)
        return normalize_adjacency(adj, "row")

    def pre_epoch_processing(self, epoch: int) -> None:
        """Prunes the user-item graph for the coming epoch."""
        if self.dropout <= 0.0:
            self.register_sparse("masked_adj", self.sparse("norm_adj"))
        else:
            self.register_sparse("masked_adj", self.pruned_adjacency(self.sample_edges(epoch)))
        self._pruned = True

    # -- representations ------------------------------------------------------------------
    def forward(self, adj: Tensor) -> Tuple[Tensor, Tensor]:
        """``(users [n_users, d], items [n_items, d])`` over the user-item graph ``adj``."""
        h = self.item_id_embedding.weight
        mm_adj = self.sparse("mm_adj")
        for _ in range(self.n_mm_layers):
            h = torch.sparse.mm(mm_adj, h)
        ego = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight])
        z_u, z_i = torch.split(lightgcn_mean(adj, ego, self.n_ui_layers), [self.n_users, self.n_items])
        return z_u, z_i + h

    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        return self.forward(self.sparse("norm_adj"))

    def calculate_loss(self, interaction):
        if not self._pruned:  # calculate_loss without RecBole's trainer: prune for epoch 0
            self.pre_epoch_processing(0)
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        e_u, e_i = self.forward(self.sparse("masked_adj"))
        u = e_u.index_select(0, user)
        loss = bpr(u, e_i.index_select(0, pos), e_i.index_select(0, neg))
        if self.reg_weight:
            for m in self.modalities:
                proj, x = self.projections[m], self.features[m]
                loss = loss + self.reg_weight * bpr(u, proj(x.index_select(0, pos)), proj(x.index_select(0, neg)))
        return loss
