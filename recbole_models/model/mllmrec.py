r"""
MLLMRec
################################################

Reference:
    "Exploring the Potential of Multimodal LLMs in Recommender Systems" (MLLMRec).
    An MLLM turns item images into text and reasons each user's preference from
    their interaction history; a refined item-item graph (threshold-denoised
    k-NN + Jaccard audience co-occurrence) propagates the item features.

Model (per item :math:`i`, user :math:`u`):

.. math::
    A &= A^{s} + A^{c}, \quad
    A^{s}_{ij} = \mathbb{1}[j \in \text{top-}k(s_{i\cdot}),\ s_{ij} \ge \epsilon], \quad
    A^{c}_{ij} = J_{ij} \text{ for the top-}k_c \text{ Jaccard neighbours} \\
    L &= D^{-1/2} A D^{-1/2}, \quad D = \operatorname{diag}(A \mathbf{1}), \qquad
    \mathbf{H} = \textstyle\sum_{l=0}^{L_{item}} L^{l} \mathbf{X} \\
    \mathbf{e}_i &= \mathrm{MLP}_I(\mathbf{h}_i), \quad
    \mathbf{e}_u = \mathrm{MLP}_U(\mathbf{p}_u), \quad
    \mathrm{MLP}(\mathbf{x}) = W_2\,\mathrm{LeakyReLU}(W_1 \mathbf{x} + b_1) + b_2 \\
    \hat{y}_{ui} &= \mathbf{e}_u^\top \mathbf{e}_i, \qquad
    \mathcal{L} = -\textstyle\sum \log \sigma(\hat{y}_{ui} - \hat{y}_{uj})

with :math:`\mathbf{X}` the encoded item descriptions, :math:`\mathbf{p}_u` the
encoded preference text of user :math:`u`, both frozen. The graph is built from
the TRAINING interactions only (``dataset.inter_matrix()`` of the training
split), so :math:`\mathbf{H}` is a constant of the data: it is computed once
here and kept as a buffer. Per batch only the batch's users and items go through
the towers; ``full_sort_predict`` runs the item tower once per evaluation, in a
cache keyed by the weights (:mod:`recbole_models.model.eval_cache`), so the test
after RecBole loads the best checkpoint scores that checkpoint, not the outputs
of the last validation epoch.

Config keys (defaults in ``recbole_models/yaml/mllmrec.yaml``):

- ``embedding_size`` (int): output size :math:`d_{out}` of both towers (64).
- ``hidden_size`` (int): hidden size of both towers (256).
- ``knn_k`` (int): semantic neighbours per item, self included (10).
- ``knn_threshold`` (float or ``None``): :math:`\epsilon`; ``None`` = plain k-NN,
  the paper's "w/o GD" (0.7 for Baby, 0.4 Sports, 0.6 Clothing).
- ``cooc_k`` (int): co-occurrence neighbours :math:`k_c`; ``0`` drops the
  co-occurrence graph, the paper's "w/o TE" (10 Baby/Sports, 15 Clothing).
- ``n_item_layers`` (int): item-graph LightGCN layers :math:`L_{item}` (1);
  ``0`` is "w/o GCN" (:math:`\mathbf{H} = \mathbf{X}`).
- ``n_ui_layers`` (int): user-item LightGCN layers on both towers' outputs (0);
  ``> 0`` is the paper's "+UI-GCN", as in the reference code:
  :math:`\mathbf{Z} = \sum_{l=0}^{L_{ui}} \hat{A}^l\,\mathrm{normalize}([\mathbf{E}_U; \mathbf{E}_I])`
  with :math:`\hat{A}` the symmetric-normalised training bipartite graph and
  row-wise L2 normalisation, then :math:`\mathbf{E} \leftarrow \mathbf{E} + \mathbf{Z}`.
  This needs every user and item each step.
- ``use_preference`` (bool): ``False`` replaces :math:`\mathbf{p}_u` by a
  learnable, Xavier-initialised vector of the same size, "w/o RS" (True).
- ``item_feature_field`` / ``user_feature_field`` (str): the id fields of
  ``preload_weight`` holding item / user features (``iid`` / ``uid``); see
  ``docs/recbole.md`` for the feature files.
"""
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.data import Data
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.transforms import Compose

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_uniform_initialization
from recbole.model.loss import BPRLoss
from recbole.utils import InputType

from mllmrec_pyg.nn import LightGCNPropagation
from mllmrec_pyg.transforms import JaccardCooccurrence, ThresholdKNN, Union
from recbole_models.features import feature_matrix
from recbole_models.model.eval_cache import WeightKeyedCache


def _tower(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, out))


def _int_key(config, key: str, minimum: int) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"config `{key}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def build_item_graph(x: torch.Tensor, ui: torch.Tensor, num_users: int, knn_k: int,
                     knn_threshold: Optional[float], cooc_k: int) -> Data:
    r"""The refined item-item graph (``edge_index`` / ``edge_weight`` = normalised
    :math:`L`) over items ``0..N-1`` from features ``x`` [N, d] and TRAINING
    (user, item) rows ``ui`` [2, nnz]."""
    steps = [ThresholdKNN(k=knn_k, threshold=knn_threshold)]
    if cooc_k > 0:
        steps.append(JaccardCooccurrence(k=cooc_k))
    steps.append(Union())
    return Compose(steps)(Data(x=x, inter_index=ui, num_users=num_users, num_items=x.size(0)))


class MLLMRec(GeneralRecommender):
    r"""MLLMRec: preference-text user tower, graph-propagated description item tower."""

    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = _int_key(config, "embedding_size", 1)
        self.hidden_size = _int_key(config, "hidden_size", 1)
        self.knn_k = _int_key(config, "knn_k", 1)
        self.knn_threshold = config["knn_threshold"]
        self.cooc_k = _int_key(config, "cooc_k", 0)
        self.n_item_layers = _int_key(config, "n_item_layers", 0)
        self.n_ui_layers = _int_key(config, "n_ui_layers", 0)
        self.use_preference = config["use_preference"]
        if self.use_preference not in (True, False):
            raise ValueError(f"config `use_preference` must be True or False, got {self.use_preference!r}")

        # Row 0 of RecBole's id spaces is [PAD]: it has no features and no interactions.
        item_x = torch.from_numpy(feature_matrix(
            dataset, config["item_feature_field"] or "iid", self.n_items, "item"))
        inter = dataset.inter_matrix(form="coo")  # the TRAINING split: this is train_data's dataset
        ui = torch.from_numpy(np.vstack([inter.row, inter.col]).astype(np.int64))
        self.register_buffer("item_h", self._propagate_items(item_x, ui), persistent=False)

        if self.use_preference:
            user_x = torch.from_numpy(feature_matrix(
                dataset, config["user_feature_field"] or "uid", self.n_users, "user"))
            self.register_buffer("user_x", user_x, persistent=False)
            self.user_embedding = None
        else:
            self.register_buffer("user_x", None, persistent=False)
            self.user_embedding = nn.Embedding(self.n_users, item_x.size(1))

        user_dim = self.user_x.size(1) if self.use_preference else item_x.size(1)
        self.user_tower = _tower(user_dim, self.hidden_size, self.embedding_size)
        self.item_tower = _tower(item_x.size(1), self.hidden_size, self.embedding_size)

        if self.n_ui_layers > 0:
            # Bipartite training graph, users 0..U-1 then items U..U+I-1, both directions,
            # normalised once: LGConv(normalize=True) would redo gcn_norm every step.
            src = torch.cat([ui[0], ui[1] + self.n_users])
            dst = torch.cat([ui[1] + self.n_users, ui[0]])
            ei, ew = gcn_norm(torch.stack([src, dst]), None, self.n_users + self.n_items,
                              add_self_loops=False)
            self.register_buffer("ui_edge_index", ei, persistent=False)
            self.register_buffer("ui_edge_weight", ew, persistent=False)
            self.ui_gcn = LightGCNPropagation(num_layers=self.n_ui_layers, combine="sum")

        self.loss = BPRLoss()
        self.apply(xavier_uniform_initialization)
        # Full-sort outputs, reused across the user batches of one evaluation and
        # recomputed whenever any weight changed (optimiser step, best-checkpoint load).
        self._eval_cache: WeightKeyedCache = WeightKeyedCache()

    def _propagate_items(self, item_x: torch.Tensor, ui: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbf{H}` for all internal item ids (row 0, [PAD], stays zero)."""
        if self.n_item_layers == 0:
            return item_x
        x = item_x[1:]
        keep = ui[1] > 0
        ui = torch.stack([ui[0, keep], ui[1, keep] - 1])
        g = build_item_graph(x, ui, self.n_users, self.knn_k, self.knn_threshold, self.cooc_k)
        with torch.no_grad():
            h = LightGCNPropagation(num_layers=self.n_item_layers)(x, g.edge_index, g.edge_weight)
        return torch.cat([torch.zeros_like(item_x[:1]), h])

    # -- representations ------------------------------------------------------------
    def _user_input(self, user: torch.Tensor) -> torch.Tensor:
        return self.user_x[user] if self.use_preference else self.user_embedding(user)

    def _all_outputs(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Both towers over every user and item (+UI-GCN when configured)."""
        users = torch.arange(self.n_users, device=self.item_h.device)
        e_u = self.user_tower(self._user_input(users))
        e_i = self.item_tower(self.item_h)
        if self.n_ui_layers > 0:
            e = torch.cat([e_u, e_i])
            z = self.ui_gcn(F.normalize(e, dim=-1), self.ui_edge_index, self.ui_edge_weight)
            e_u, e_i = torch.split(e + z, [self.n_users, self.n_items])
        return e_u, e_i

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Tower outputs ``[B, d]`` and ``[B', d]`` for the ids ``user`` [B] and ``item`` [B']."""
        # index_select, not ``t[idx]``: the backward of advanced indexing accumulates
        # repeated ids in a thread-dependent order on CPU, so two runs with one seed
        # would drift apart; index_select's backward (index_add) is deterministic.
        if self.n_ui_layers > 0:
            e_u, e_i = self._all_outputs()
            return e_u.index_select(0, user.view(-1)), e_i.index_select(0, item.view(-1))
        # Towers only on the distinct ids of the batch, not on every user and item.
        uu, u_inv = torch.unique(user.view(-1), return_inverse=True)
        ii, i_inv = torch.unique(item.view(-1), return_inverse=True)
        return (self.user_tower(self._user_input(uu)).index_select(0, u_inv),
                self.item_tower(self.item_h[ii]).index_select(0, i_inv))

    def _full_sort_outputs(self) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        # Without +UI-GCN a user's output depends on that user alone: only the items are precomputed.
        if self.n_ui_layers > 0:
            return self._all_outputs()
        return None, self.item_tower(self.item_h)

    # -- RecBole interface ------------------------------------------------------------
    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        e_u, e_items = self.forward(user, torch.cat([pos, neg]))
        e_pos, e_neg = e_items.split(pos.size(0))
        return self.loss((e_u * e_pos).sum(-1), (e_u * e_neg).sum(-1))

    def predict(self, interaction):
        e_u, e_i = self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])
        return (e_u * e_i).sum(-1)

    def full_sort_predict(self, interaction):
        user = interaction[self.USER_ID]
        all_u, all_i = self._eval_cache.get(self, self._full_sort_outputs)
        e_u = all_u[user] if all_u is not None else self.user_tower(self._user_input(user))
        return (e_u @ all_i.t()).view(-1)
