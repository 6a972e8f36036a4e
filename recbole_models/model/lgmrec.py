r"""
LGMRec
################################################

Reference:
    Zhiqiang Guo, Jianjun Li, Guohui Li, Chaoyang Wang, Si Shi and Bin Ruan.
    "LGMRec: Local and Global Graph Learning for Multimodal Recommendation." AAAI 2024.
    Reference code consulted for behaviour: the MMRec toolbox's ``src/models/lgmrec.py``
    and ``src/configs/model/LGMRec.yaml`` (enoche/MMRec; the authors' georgeguo-cn/LGMRec
    is the same model).

Model. With :math:`R \in \{0,1\}^{|U| \times |I|}` the TRAINING interactions,
:math:`\hat{A} = D^{-1/2} A D^{-1/2}` the normalised bipartite graph, :math:`E_U, E_I`
ID tables and :math:`X_m` the frozen features of modality :math:`m`:

Local graph embeddings. Collaborative (CGE), LightGCN over the ID tables; modality
(MGE), item features projected to :math:`d`, users the mean of their items, then
:math:`L_m` plain propagations (last layer only):

.. math::
    C = \tfrac{1}{L_{ui}+1} \textstyle\sum_{l=0}^{L_{ui}} \hat{A}^{l} [E_U; E_I], \qquad
    M_m = \hat{A}^{L_m} \big[\,D_U^{-1} R\, X_m T_m;\ X_m T_m\,\big], \qquad
    Z^{local} = C + \textstyle\sum_m \mathrm{normalize}(M_m)

Global hypergraph embeddings (GHE). Each modality has :math:`h` learnable hyperedges;
items attach to them by Gumbel-softmax over :math:`X_m V_m`, users by Gumbel-softmax
over the sum of their items' logits; the CGE item vectors travel item -> hyperedge
-> item/user :math:`L_h` times:

.. math::
    H^{I}_m = \mathrm{GS}_\tau(X_m V_m), \quad H^{U}_m = \mathrm{GS}_\tau(R\, X_m V_m), \quad
    \Lambda^{(l)} = H^{I\top}_m G^{I,(l-1)}_m, \quad
    G^{I,(l)}_m = H^{I}_m \Lambda^{(l)}, \quad G^{U,(l)}_m = H^{U}_m \Lambda^{(l)}

with :math:`G^{I,(0)}_m = C_I` and :math:`\mathrm{GS}_\tau` the soft Gumbel-softmax
over hyperedges, both assignment matrices passed through dropout (rate
:math:`1 - \text{keep\_rate}`) while training. Final vectors and loss:

.. math::
    Z = Z^{local} + \alpha\, \mathrm{normalize}\big(\textstyle\sum_m [G^{U,(L_h)}_m; G^{I,(L_h)}_m]\big),
    \qquad \hat{y}_{ui} = \mathbf{z}_u^\top \mathbf{z}_i

.. math::
    \mathcal{L} = -\tfrac{1}{B}\textstyle\sum \log\sigma(\hat{y}_{ui} - \hat{y}_{uj})
      + \lambda_{cl}\, \mathcal{L}_{hcl}
      + \lambda_{reg}\, \tfrac{1}{B}\big(\lVert Z_u\rVert + \lVert Z_{i}\rVert + \lVert Z_{j}\rVert\big)

where :math:`\mathcal{L}_{hcl}` contrasts the hypergraph vectors of two modalities
:math:`a, b`: for the batch's users (and, the same way, its positive items)
:math:`\sum_{u} -\log \frac{\exp(\cos(g^a_u, g^b_u)/\tau)}{\sum_{v} \exp(\cos(g^a_u, g^b_v)/\tau)}`,
the denominator over every user (item) — a sum over the batch, not a mean, as in
the reference. Cost: ``[B, |U|]`` and ``[B, |I|]`` score blocks per pair, and the
hypergraph products are ``[n, h] x [h, d]``: no ``N x N`` matrix anywhere.

Modalities: every one present enters MGE and GHE as one summand (:math:`\sum_m`).
With two (the reference's image + text) :math:`\mathcal{L}_{hcl}` is the
reference's single term (first modality against the second); with more, it sums
over every pair :math:`a < b` in the model's order; with one, there is no second
view to contrast and :math:`\mathcal{L}_{hcl} = 0` (the reference cannot run with
one modality: it falls back to CGE alone and then fails on an undefined variable).

LGMRec has no item-item k-NN graph (its item-item structure is the learned
hypergraph), so "+GR" has no place in it: ``graph_refinement`` must stay ``False``
and there is no ``LGMRec+GR`` variant.

Config keys (defaults in ``recbole_models/yaml/lgmrec.yaml``, the reference's Baby values):

- ``embedding_size`` (int): :math:`d` of the ID tables (64).
- ``feat_embed_dim`` (int): width of :math:`T_m`; it must equal ``embedding_size``
  since :math:`Z^{local}` adds the two (64).
- ``cf_model`` (str): ``"lightgcn"`` (CGE as above) or ``"mf"`` (:math:`C = [E_U; E_I]`).
- ``n_ui_layers`` (int): :math:`L_{ui}` (2).
- ``n_mm_layers`` (int): :math:`L_m` (2).
- ``n_hyper_layer`` (int >= 1): :math:`L_h` (1; Clothing 2).
- ``hyper_num`` (int): hyperedges per modality :math:`h` (4; Clothing 64).
- ``keep_rate`` (float): 1 - dropout on the assignments (0.5; Sports 0.4, Clothing 0.2).
- ``alpha`` (float): weight of the global embeddings (0.3; Sports 0.6, Clothing 0.2).
- ``cl_weight`` (float): :math:`\lambda_{cl}` (1e-4).
- ``reg_weight`` (float): :math:`\lambda_{reg}` (1e-6).
- ``tau`` (float): :math:`\tau` of the Gumbel-softmax and of :math:`\mathcal{L}_{hcl}`
  (0.2; hard-coded in the reference).
- ``use_modalities`` (list or ``None``): the dataset's modalities to use (``None``: all).
- ``graph_refinement`` (bool): must stay ``False`` (see above).

Behaviour kept from the reference, and where we deliberately differ:

- The Gumbel noise is drawn at evaluation too, as in the reference (only dropout
  is off there), so the scores are a draw. The reference redraws it for every
  batch of users (a user's scores depend on the batch it falls in); here it is
  drawn once per evaluation, through the weight-keyed cache, so every user of one
  evaluation is scored by one hypergraph. Draws follow RecBole's seed.
- RecBole's ``[PAD]`` item (row 0, no features, no interactions) would be a
  phantom hypergraph member (its assignment row is a Gumbel draw on zero
  logits) carrying its CGE vector into every hyperedge; its assignment row is
  zeroed, and the ``[PAD]`` user and item are left out of the
  :math:`\mathcal{L}_{hcl}` denominators: the reference, which has no such rows,
  computes exactly the rest.
- :math:`\mathcal{L}_{hcl}` is computed as ``logsumexp`` minus the positive logit
  rather than the log of a ratio of exponentials: the same value, without overflow.
"""
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.nn import LGConv
from torch_geometric.utils import scatter

from mllmrec_pyg.nn import LightGCNPropagation
from recbole_models.model.multimodal import MultimodalRecommender


def hypergraph_propagate(item_assign: Tensor, user_assign: Tensor, item_emb: Tensor,
                         num_layers: int) -> Tuple[Tensor, Tensor]:
    r"""LGMRec's hypergraph layer: :math:`\Lambda = H_I^\top G_I`, then
    :math:`G_I \leftarrow H_I \Lambda` and :math:`G_U = H_U \Lambda`, ``num_layers`` times.

    Args:
        item_assign: :math:`H_I` ``[n_items, h]``.
        user_assign: :math:`H_U` ``[n_users, h]``.
        item_emb: :math:`G_I^{(0)}` ``[n_items, d]``.
        num_layers: :math:`L_h \ge 1`.

    Returns:
        ``(G_U, G_I)`` after the last layer.
    """
    g_item, g_user = item_emb, None
    for _ in range(num_layers):
        hyperedges = item_assign.t() @ g_item
        g_item = item_assign @ hyperedges
        g_user = user_assign @ hyperedges
    return g_user, g_item


def contrast_all(a: Tensor, b: Tensor, b_all: Tensor, tau: float) -> Tensor:
    r""":math:`\sum_r -\log \frac{\exp(\cos(a_r, b_r)/\tau)}{\sum_v \exp(\cos(a_r, b^{all}_v)/\tau)}`."""
    a, b, b_all = F.normalize(a, dim=1), F.normalize(b, dim=1), F.normalize(b_all, dim=1)
    positive = (a * b).sum(1) / tau
    return (torch.logsumexp(a @ b_all.t() / tau, dim=1) - positive).sum()


class LGMRec(MultimodalRecommender):
    r"""LGMRec: local (collaborative + modality) graph embeddings plus a global hypergraph."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if self.graph_refinement:
            raise ValueError("LGMRec has no item-item k-NN graph: config `graph_refinement` must be False")
        self.embedding_size = int(config["embedding_size"])
        self.feat_embed_dim = int(config["feat_embed_dim"])
        if self.feat_embed_dim != self.embedding_size:
            raise ValueError(f"config `feat_embed_dim` ({self.feat_embed_dim}) must equal `embedding_size` "
                             f"({self.embedding_size}): LGMRec adds the modality and ID embeddings")
        self.cf_model = config["cf_model"]
        if self.cf_model not in ("lightgcn", "mf"):
            raise ValueError(f"config `cf_model` must be 'lightgcn' or 'mf', got {self.cf_model!r}")
        self.n_ui_layers = int(config["n_ui_layers"])
        self.n_mm_layers = int(config["n_mm_layers"])
        self.n_hyper_layer = int(config["n_hyper_layer"])
        if self.n_hyper_layer < 1:
            raise ValueError(f"config `n_hyper_layer` must be >= 1, got {self.n_hyper_layer}")
        self.hyper_num = int(config["hyper_num"])
        self.keep_rate = float(config["keep_rate"])
        if not 0.0 < self.keep_rate <= 1.0:
            raise ValueError(f"config `keep_rate` must be in (0, 1], got {self.keep_rate}")
        self.alpha = float(config["alpha"])
        self.cl_weight = float(config["cl_weight"])
        self.reg_weight = float(config["reg_weight"])
        self.tau = float(config["tau"])
        d = self.embedding_size

        self.user_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embedding = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.projection = nn.ParameterDict()
        self.hyper = nn.ParameterDict()
        for m in self.modalities:
            x = self.modality_features[m]
            self.register_buffer(f"features_{m}", x, persistent=False)
            self.projection[m] = nn.Parameter(nn.init.xavier_uniform_(torch.empty(x.size(1), d)))
            self.hyper[m] = nn.Parameter(nn.init.xavier_uniform_(torch.empty(x.size(1), self.hyper_num)))
        self.drop = nn.Dropout(p=1.0 - self.keep_rate)

        # A sparse adjacency (PyG's spmm path), not edge_index messages: several times
        # faster per batch on CPU; symmetric, so it is its own adj_t.
        self.register_sparse("ui_adj", self.user_item_adjacency())
        self.register_buffer("inter_user", self.inter_index[0].clone(), persistent=False)
        self.register_buffer("inter_item", self.inter_index[1].clone(), persistent=False)
        pad_mask = torch.ones(self.n_items, 1)
        pad_mask[0] = 0.0  # RecBole's [PAD] item joins no hyperedge
        self.register_buffer("item_mask", pad_mask, persistent=False)
        self.cge_propagate = LightGCNPropagation(num_layers=self.n_ui_layers, combine="mean")
        self.mm_conv = LGConv(normalize=False)

    # -- pieces ------------------------------------------------------------------------
    def _users_from_items(self, item_values: Tensor, reduce: str) -> Tensor:
        r""":math:`R X` (``"sum"``) or :math:`D_U^{-1} R X` (``"mean"``) over the TRAINING rows."""
        messages = item_values.index_select(0, self.inter_item)
        return scatter(messages, self.inter_user, dim=0, dim_size=self.n_users, reduce=reduce)

    def collaborative(self) -> Tensor:
        """CGE: ``[n_users + n_items, d]``."""
        x = torch.cat([self.user_embedding, self.item_embedding])
        if self.cf_model == "mf":
            return x
        return self.cge_propagate(x, self.sparse("ui_adj"))

    def modality_graph(self, m: str) -> Tensor:
        """MGE of modality ``m``: ``[n_users + n_items, d]``."""
        items = getattr(self, f"features_{m}") @ self.projection[m]
        h = torch.cat([self._users_from_items(items, "mean"), items])
        adj = self.sparse("ui_adj")
        for _ in range(self.n_mm_layers):
            h = self.mm_conv(h, adj)
        return h

    def hyperedge_assignments(self, m: str) -> Tuple[Tensor, Tensor]:
        r"""``(H_I, H_U)`` of modality ``m``: Gumbel-softmax draws (before dropout)."""
        logits = getattr(self, f"features_{m}") @ self.hyper[m]
        user_logits = self._users_from_items(logits, "sum")
        item_assign = F.gumbel_softmax(logits, tau=self.tau, dim=1, hard=False)
        user_assign = F.gumbel_softmax(user_logits, tau=self.tau, dim=1, hard=False)
        return item_assign * self.item_mask, user_assign

    def forward(self) -> Tuple[Tensor, Tensor, Dict[str, Tuple[Tensor, Tensor]]]:
        """``(Z_U, Z_I, {modality: (G_U, G_I)})``."""
        assignments = {m: self.hyperedge_assignments(m) for m in self.modalities}
        cge = self.collaborative()
        local = cge + sum(F.normalize(self.modality_graph(m), dim=1) for m in self.modalities)
        cge_items = cge[self.n_users:]
        hyper = {}
        for m in self.modalities:
            item_assign, user_assign = assignments[m]
            hyper[m] = hypergraph_propagate(self.drop(item_assign), self.drop(user_assign),
                                            cge_items, self.n_hyper_layer)
        global_ = sum(torch.cat(hyper[m]) for m in self.modalities)
        z = local + self.alpha * F.normalize(global_, dim=1)
        z_users, z_items = torch.split(z, [self.n_users, self.n_items])
        return z_users, z_items, hyper

    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        z_users, z_items, _ = self.forward()
        return z_users, z_items

    # -- loss --------------------------------------------------------------------------
    def hypergraph_contrast(self, hyper: Dict[str, Tuple[Tensor, Tensor]], user: Tensor,
                            item: Tensor) -> Tensor:
        r""":math:`\mathcal{L}_{hcl}` over every pair of modalities (0 with one modality)."""
        loss = hyper[self.modalities[0]][0].new_zeros(())
        names: List[str] = self.modalities
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                (ua, ia), (ub, ib) = hyper[names[a]], hyper[names[b]]
                loss = loss + contrast_all(ua.index_select(0, user), ub.index_select(0, user), ub[1:], self.tau)
                loss = loss + contrast_all(ia.index_select(0, item), ib.index_select(0, item), ib[1:], self.tau)
        return loss

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        z_users, z_items, hyper = self.forward()
        e_u = z_users.index_select(0, user)
        e_pos = z_items.index_select(0, pos)
        e_neg = z_items.index_select(0, neg)
        bpr = -F.logsigmoid((e_u * e_pos).sum(1) - (e_u * e_neg).sum(1)).mean()
        reg = (e_u.norm() + e_pos.norm() + e_neg.norm()) / user.numel()
        return bpr + self.cl_weight * self.hypergraph_contrast(hyper, user, pos) + self.reg_weight * reg
