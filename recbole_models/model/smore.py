r"""
SMORE
################################################

Reference:
    Rongqing Kenneth Ong and Andy W. H. Khong. "Spectrum-based Modality Representation
    Fusion Graph Convolutional Network for Multimodal Recommendation." WSDM 2025.
    Reference code: github.com/kennethorq/SMORE (``src/models/smore.py``, identical to
    ``src/models/smore.py`` of github.com/enoche/MMRec), consulted for behaviour.

Per modality :math:`m` (features :math:`\mathbf{X}^m`, trainable as in the reference)
and for a fusion view :math:`f`, with ID embeddings :math:`\mathbf{E}_U, \mathbf{E}_I`:

.. math::
    \mathbf{P}^m &= \mathbf{X}^m W_m + b_m, \qquad
    \mathcal{F}(\cdot) = \mathrm{rfft}(\cdot, \text{ortho}) \text{ along the embedding} \\
    \mathbf{C}^m &= \mathcal{F}^{-1}\big(\mathcal{F}(\mathbf{P}^m) \odot \mathbf{w}_m\big), \qquad
    \mathbf{C}^f = \mathcal{F}^{-1}\big(\textstyle\prod_m \mathcal{F}(\mathbf{P}^m) \odot \mathbf{w}_f\big)
    \quad (\mathbf{w} \in \mathbb{C}^{d/2+1} \text{ learnable filters}) \\
    S^m &= D_m^{-1/2} K^m D_m^{-1/2},\ K^m_{ij} = \cos(\mathbf{x}^m_i, \mathbf{x}^m_j)\,
        \mathbb{1}[j \in \text{top-}k_m(i)], \qquad
    S^f_{ij} = \max_{m:\ (i,j) \in S^m} S^m_{ij} \ (\text{element-wise max over the union of edges}) \\
    \mathbf{I}^v &= (S^v)^{L}\big(\mathbf{E}_I \odot \sigma(\mathrm{Lin}_v(\mathbf{C}^v))\big), \quad
    \mathbf{U}^v = R\,\mathbf{I}^v, \quad \mathbf{V}^v = [\mathbf{U}^v; \mathbf{I}^v]
    \qquad (v \in \{m\} \cup \{f\}) \\
    \mathbf{Z} &= \tfrac{1}{L_{ui}+1}\textstyle\sum_{l=0}^{L_{ui}} \hat{A}^l [\mathbf{E}_U; \mathbf{E}_I]
    \quad \text{(content)} \\
    \mathbf{G}^m &= \mathrm{drop}(\sigma(\mathrm{Lin}^p_m\mathbf{Z})) \odot
        \operatorname{softmax}_{row}(Q_m(\mathbf{V}^f)) \odot \mathbf{V}^m, \quad
    \mathbf{G}^f = \mathrm{drop}(\sigma(\mathrm{Lin}^p_f\mathbf{Z})) \odot \mathbf{V}^f \\
    \mathbf{S} &= \operatorname{mean}(\mathbf{G}^{m_1}, \dots, \mathbf{G}^{m_M}, \mathbf{G}^f)
    \quad \text{(side)}, \qquad [\mathbf{e}_U; \mathbf{e}_I] = \mathbf{Z} + \mathbf{S} \\
    \mathcal{L} &= \mathrm{BPR} + \lambda\,\tfrac{1}{2B}(\|\mathbf{e}_u\|^2 + \|\mathbf{e}_i\|^2
        + \|\mathbf{e}_j\|^2) + \alpha\,[\mathrm{InfoNCE}_\tau(\mathbf{S}_i, \mathbf{Z}_i)
        + \mathrm{InfoNCE}_\tau(\mathbf{S}_u, \mathbf{Z}_u)]

with :math:`Q_m` = Linear-Tanh-Linear, :math:`\hat{A}` the symmetric-normalised
training bipartite graph, :math:`R` its user-item block, :math:`B` = ``train_batch_size``
and InfoNCE over the batch's positive items and users (in-batch negatives).

Modalities: every used modality gets its own filter, graph, gates and view; the
fusion spectrum is the product of all of theirs. With two (the paper's image and
text) this is SMORE exactly; with one, :math:`S^f = S^1` and the fusion view is a
second filtered view of the same modality; with more, the product and the max run
over all of them.

"+GR" (``graph_refinement: True``): :math:`K^m` is MLLMRec's refined graph of modality
:math:`m` (:meth:`MultimodalRecommender.item_item_adjacency`); normalisation and max
fusion are unchanged.

Config keys (defaults in ``recbole_models/yaml/smore.yaml``, the reference's best
values for Amazon Baby):

- ``embedding_size`` (int): :math:`d` (64).
- ``n_ui_layers`` (int): :math:`L_{ui}` (4; grid [3, 4]).
- ``n_layers`` (int): :math:`L`, propagations over the item-item graphs (1).
- ``knn_k`` (int): :math:`k_m` for modalities not in ``modality_knn_k`` (10).
- ``modality_knn_k`` (dict or None): per-modality :math:`k_m`, the reference's
  ``image_knn_k`` / ``text_knn_k`` (``{image: 40, text: 15}``; grid [10, 15, 20, 40] each).
- ``reg_weight`` (float): :math:`\lambda` (1e-4; grid [1e-5, 1e-4]).
- ``cl_loss`` (float): :math:`\alpha` (0.01).
- ``temperature`` (float): :math:`\tau` (0.2).
- ``dropout_rate`` (float): dropout on the preference gates (0.1; grid [0, 0.1]).
- ``use_modalities``, ``graph_refinement``, ``knn_threshold``, ``cooc_k``: see
  :class:`~recbole_models.model.multimodal.MultimodalRecommender`.

Where we differ from the reference code, deliberately:

- It reads ``temperature`` but hard-codes 0.2 in the loss: we use the key (same default).
- It caches each graph in ``image_adj_{k}_True.pt`` keyed by ``k`` alone (a new feature
  file reuses the stale graph) and moves it with ``.cuda()``: we build the graphs from
  the features every time, on the model's device.
- Its learning-rate schedule ``learning_rate_scheduler: [0.96, 50]`` (lr :math:`\cdot
  0.96^{epoch/50}`) has no counterpart in RecBole 1.2.1's trainer: not applied.
- It needs both image and text; we take any non-empty set of modalities (above).
- A k-NN neighbour of non-positive cosine is dropped from :math:`K^m` (the reference
  keeps it; where a row's similarities sum below 0, as when :math:`k` nears the number
  of items, its :math:`D^{-1/2}` is NaN). With real features and :math:`k \ll N` no
  such neighbour exists.
"""
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recbole_models.model.multimodal import (MultimodalRecommender, bpr, drop_nonpositive, lightgcn_mean,
                                             normalize_adjacency)


def max_pool_graphs(adjs: List[Tensor]) -> Tensor:
    r"""Element-wise maximum of sparse matrices over the union of their entries: an
    entry present in some of them takes the largest of those values (absent entries
    are :math:`-\infty`, not 0, as in the reference)."""
    n = adjs[0].size(0)
    indices = torch.cat([a.coalesce().indices() for a in adjs], 1)
    values = torch.cat([a.coalesce().values() for a in adjs])
    keys, inverse = torch.unique(indices[0] * n + indices[1], return_inverse=True)
    pooled = values.new_full((keys.numel(),), float("-inf"))
    pooled.scatter_reduce_(0, inverse, values, reduce="amax")
    return torch.sparse_coo_tensor(torch.stack([keys // n, keys % n]), pooled, adjs[0].shape).coalesce()


def info_nce(view1: Tensor, view2: Tensor, temperature: float) -> Tensor:
    r""":math:`-\operatorname{mean}_i \log \frac{\exp(\cos(a_i, b_i)/\tau)}
    {\sum_j \exp(\cos(a_i, b_j)/\tau)}`."""
    a, b = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = a @ b.t() / temperature
    return F.cross_entropy(logits, torch.arange(a.size(0), device=a.device))


def _gate(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


class SMORE(MultimodalRecommender):
    r"""SMORE: spectral modality fusion, max-pooled modality graphs, modality-aware preferences."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = int(config["embedding_size"])
        self.n_ui_layers = int(config["n_ui_layers"])
        self.n_layers = int(config["n_layers"])
        self.reg_weight = float(config["reg_weight"])
        self.cl_weight = float(config["cl_loss"])
        self.temperature = float(config["temperature"])
        self.batch_size = int(config["train_batch_size"])
        self.knn_ks = self._knn_ks(config["knn_k"], config["modality_knn_k"])

        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.features = nn.ParameterDict({m: nn.Parameter(x.clone()) for m, x in self.modality_features.items()})
        self.projections = nn.ModuleDict({m: nn.Linear(x.size(1), d) for m, x in self.modality_features.items()})

        views = self.modalities + ["fusion"]
        self.filters = nn.ParameterDict({v: nn.Parameter(torch.randn(1, d // 2 + 1, 2)) for v in views})
        self.item_gates = nn.ModuleDict({v: _gate(d) for v in views})
        self.prefer_gates = nn.ModuleDict({v: _gate(d) for v in views})
        self.queries = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d, bias=False))
                                      for m in self.modalities})
        self.dropout = nn.Dropout(float(config["dropout_rate"]))

        graphs = {m: self.modality_graph(m) for m in self.modalities}
        for m, g in graphs.items():
            self.register_sparse(f"adj_{m}", g)
        self.register_sparse("adj_fusion", max_pool_graphs(list(graphs.values())))
        norm_adj = self.user_item_adjacency()
        self.register_sparse("norm_adj", norm_adj)
        row, col = norm_adj.indices()
        block = (row < self.n_users) & (col >= self.n_users)
        self.register_sparse("R", torch.sparse_coo_tensor(
            torch.stack([row[block], col[block] - self.n_users]), norm_adj.values()[block],
            (self.n_users, self.n_items)))

    def _knn_ks(self, default, per_modality) -> Dict[str, int]:
        per_modality = per_modality or {}
        if not isinstance(per_modality, dict):
            raise ValueError(f"config `modality_knn_k` must map modality names to ints, got {per_modality!r}")
        ks = {m: int(per_modality.get(m, default)) for m in self.modalities}
        bad = {m: k for m, k in ks.items() if k < 1}
        if bad:
            raise ValueError(f"config `knn_k` / `modality_knn_k` must be >= 1, got {bad}")
        return ks

    def modality_graph(self, m: str) -> Tensor:
        r""":math:`S^m`: the cosine-weighted k-NN graph (or "+GR") of modality ``m``, symmetric-normalised."""
        adj = self.item_item_adjacency(self.modality_features[m], self.knn_ks[m], weighted=True)
        return normalize_adjacency(drop_nonpositive(adj), "row")

    # -- representations ------------------------------------------------------------------
    def spectral(self, projected: Dict[str, Tensor]) -> Dict[str, Tensor]:
        r""":math:`\mathbf{C}^m` per modality and :math:`\mathbf{C}^f` (key ``"fusion"``)."""
        d = self.embedding_size
        spectra = {m: torch.fft.rfft(p, dim=1, norm="ortho") for m, p in projected.items()}
        out = {m: torch.fft.irfft(s * torch.view_as_complex(self.filters[m]), n=d, dim=1, norm="ortho")
               for m, s in spectra.items()}
        product = None
        for s in spectra.values():
            product = s if product is None else product * s
        out["fusion"] = torch.fft.irfft(product * torch.view_as_complex(self.filters["fusion"]), n=d, dim=1,
                                        norm="ortho")
        return out

    def forward(self) -> Tuple[Tensor, Tensor]:
        """``(side, content)``, each ``[n_users + n_items, d]`` (users first)."""
        item_id = self.item_id_embedding.weight
        conv = self.spectral({m: self.projections[m](self.features[m]) for m in self.modalities})
        content = lightgcn_mean(self.sparse("norm_adj"), torch.cat([self.user_embedding.weight, item_id]),
                                self.n_ui_layers)
        r = self.sparse("R")
        views = {}
        for v, c in conv.items():
            h = item_id * self.item_gates[v](c)
            adj = self.sparse(f"adj_{v}")
            for _ in range(self.n_layers):
                h = torch.sparse.mm(adj, h)
            views[v] = torch.cat([torch.sparse.mm(r, h), h])
        fusion = views["fusion"]
        parts = [self.dropout(self.prefer_gates[m](content)) * torch.softmax(self.queries[m](fusion), dim=-1)
                 * views[m] for m in self.modalities]
        parts.append(self.dropout(self.prefer_gates["fusion"](content)) * fusion)
        return torch.stack(parts).mean(0), content

    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        side, content = self.forward()
        return torch.split(content + side, [self.n_users, self.n_items])

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        side, content = self.forward()
        e_u, e_i = torch.split(content + side, [self.n_users, self.n_items])
        u, p, n = e_u.index_select(0, user), e_i.index_select(0, pos), e_i.index_select(0, neg)
        loss = bpr(u, p, n)
        loss = loss + self.reg_weight * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / self.batch_size
        s_u, s_i = torch.split(side, [self.n_users, self.n_items])
        c_u, c_i = torch.split(content, [self.n_users, self.n_items])
        cl = (info_nce(s_i.index_select(0, pos), c_i.index_select(0, pos), self.temperature)
              + info_nce(s_u.index_select(0, user), c_u.index_select(0, user), self.temperature))
        return loss + self.cl_weight * cl
