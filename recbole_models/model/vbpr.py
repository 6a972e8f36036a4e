r"""
VBPR
################################################

Reference:
    Ruining He and Julian McAuley. "VBPR: Visual Bayesian Personalized Ranking from
    Implicit Feedback." AAAI 2016. Reference code consulted for behaviour: the
    MMRec toolbox's ``src/models/vbpr.py`` (enoche/MMRec).

Model. Each item has a free ID vector :math:`\gamma_i \in \mathbb{R}^d` and a content
vector projected from its frozen features :math:`\mathbf{f}_i` (the concatenation of
every modality it uses, in the order of the dataset's ``modalities`` key); each user
has a vector of twice the size, split as :math:`[\gamma_u; \theta_u]`:

.. math::
    \mathbf{e}_i = [\gamma_i;\ E\mathbf{f}_i + \mathbf{b}], \qquad
    \mathbf{e}_u = [\gamma_u; \theta_u], \qquad
    \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i
      = \gamma_u^\top\gamma_i + \theta_u^\top (E\mathbf{f}_i + \mathbf{b})

.. math::
    \mathcal{L} = -\textstyle\sum \log\sigma(\hat{y}_{ui} - \hat{y}_{uj})
      + \lambda\, \frac{1}{B}\big(\lVert\mathbf{E}_u\rVert + \lVert\mathbf{E}_{i}\rVert
      + \lVert\mathbf{E}_{j}\rVert\big)

with :math:`\lVert\cdot\rVert` the Frobenius norm of the batch's user, positive and
negative vectors (RecBole's and MMRec's ``EmbLoss``) and :math:`B` the batch size.
With one modality :math:`\mathbf{f}_i` is that modality's features; with several,
their concatenation (MMRec: text then image; here the dataset's order).

Config keys (defaults in ``recbole_models/yaml/vbpr.yaml``):

- ``embedding_size`` (int): :math:`d`, the size of :math:`\gamma_i` and of the
  projection; user vectors have :math:`2d` (64).
- ``reg_weight`` (float): :math:`\lambda` (1e-4; MMRec's grid 2, 1, 1e-1 … 1e-5).
- ``use_modalities`` (list or ``None``): which of the dataset's modalities to use
  (``None``: all).

Deliberate differences from the reference code: its ``forward(dropout)`` argument is
never set above 0 there and is left out; the original paper's item bias term
:math:`\beta_i` and visual bias :math:`\beta'^\top \mathbf{f}_i` are absent in the
reference and here alike. VBPR has no item-item graph, so "+GR" does not apply.
"""
from typing import Tuple

import torch
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss, EmbLoss
from torch import Tensor, nn

from recbole_models.model.multimodal import MultimodalRecommender


class VBPR(MultimodalRecommender):
    r"""VBPR: BPR-MF whose item vectors carry a linear projection of their content features."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if self.graph_refinement:
            raise ValueError("VBPR has no item-item graph: config `graph_refinement` must be False")
        self.embedding_size = int(config["embedding_size"])
        self.reg_weight = float(config["reg_weight"])
        features = torch.cat([self.modality_features[m] for m in self.modalities], dim=1)
        self.register_buffer("item_features", features, persistent=False)

        self.user_embedding = nn.Parameter(torch.empty(self.n_users, 2 * self.embedding_size))
        self.item_embedding = nn.Parameter(torch.empty(self.n_items, self.embedding_size))
        nn.init.xavier_uniform_(self.user_embedding)
        nn.init.xavier_uniform_(self.item_embedding)
        self.item_linear = nn.Linear(features.size(1), self.embedding_size)
        self.loss = BPRLoss()
        self.reg_loss = EmbLoss()
        self.apply(xavier_normal_initialization)  # the projection, as in the reference

    def item_vectors(self, item: Tensor) -> Tensor:
        r""":math:`[\gamma_i;\ E\mathbf{f}_i + \mathbf{b}]` for the ids ``item``."""
        content = self.item_linear(self.item_features.index_select(0, item))
        return torch.cat([self.item_embedding.index_select(0, item), content], dim=1)

    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        items = torch.arange(self.n_items, device=self.item_embedding.device)
        return self.user_embedding, self.item_vectors(items)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        e_u = self.user_embedding.index_select(0, user)
        e_items = self.item_vectors(torch.cat([pos, neg]))
        e_pos, e_neg = e_items.split(pos.size(0))
        loss = self.loss((e_u * e_pos).sum(-1), (e_u * e_neg).sum(-1))
        return loss + self.reg_weight * self.reg_loss(e_u, e_pos, e_neg)
