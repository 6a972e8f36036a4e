r"""
SOIL
################################################

Reference:
    Hongzu Su, Jingjing Li, Fengling Li, Ke Lu and Lei Zhu. "SOIL: Contrastive
    Second-Order Interest Learning for Multimodal Recommendation." ACM MM 2024.
    Reference code consulted for behaviour: the authors' MMRec fork
    (``src/models/soil.py``).

Graphs (built once from the TRAINING interactions and the frozen features;
:math:`s^m_{ij}` = cosine similarity of items :math:`i, j` in modality :math:`m`,
:math:`I_u` = user :math:`u`'s training items):

- *Interest graph* per modality. Each user's interest items are
  :math:`C_u = \bigcup_m \operatorname{top}_{k_i}\big(\sum_{i \in I_u} s^m_{i\cdot}\big)`,
  and :math:`G^m_{ic} = \sum_{u:\, i \in I_u,\ c \in C_u} s^m_{ic}` (summed over users).
  :math:`\tilde{G}^m` = its non-zero entries, :math:`D^{-1/2} G D^{-1/2}` with row sums.
- *Similarity graph* per modality: the cosine-weighted k-NN graph (top ``knn_k``,
  self included), normalised the same way, :math:`\tilde{S}^m`. The item graph is
  :math:`\tilde{G}^m + \tilde{S}^m`.
- *Attractive user-item edges*: with :math:`p_{ij} = \prod_m s^m_{ij}`, user :math:`u`
  gets the :math:`k_u = k_a + |I_u|` largest values of :math:`p_{ij}` over
  :math:`i \in I_u` and all :math:`j` (its own items, :math:`p_{ii} = 1`, come first),
  as weighted edges :math:`(u, j)` (duplicates summed; non-positive values dropped). With :math:`B` this
  symmetric user-item matrix and :math:`\hat{B} = D^{-1/2} B D^{-1/2}`, the
  propagation graph is :math:`\hat{A} + \hat{B}/2` (:math:`\hat{A}` the normalised
  training graph) and the user-item block :math:`\hat{R} + \hat{B}_{UI}/2`.

Representations: :math:`\mathbf{z} = \operatorname{mean}_{l=0..L_{ui}} (\hat{A} +
\hat{B}/2)^l [\mathbf{e}_U; \mathbf{e}_I]` (second-order graph convolution);
per modality :math:`\mathbf{h}^m_I = (\tilde{G}^m + \tilde{S}^m)^{L}
(\mathbf{e}_I \odot \sigma(W^m_2 (W^m_1 \mathbf{f}^m + b) + b'))`,
:math:`\mathbf{h}^m_U = (\hat{R} + \hat{B}_{UI}/2)\, \mathbf{h}^m_I`; attention
:math:`\alpha^m = \operatorname{softmax}_m(w^\top \tanh(W \mathbf{h}^m + b))`,
:math:`\mathbf{c} = \sum_m \alpha^m \mathbf{h}^m`, side
:math:`\mathbf{s} = (\sum_m (\mathbf{h}^m - \mathbf{c}) + \mathbf{c}) / (M + 1)`
(:func:`side_embedding`); final
:math:`\mathbf{z} + \mathbf{s}`. Loss: BPR + ``cl_loss``·(InfoNCE(:math:`\mathbf{s}_{i^+},
\mathbf{z}_{i^+}`) + InfoNCE(:math:`\mathbf{s}_u, \mathbf{z}_u`)) + ``cl_loss2``·
(InfoNCE(final\ :sub:`u`, :math:`\mathbf{z}_{i^+}`) + InfoNCE(final\ :sub:`u`,
:math:`\mathbf{s}_{i^+}`)), temperature 0.2.

Modalities: any non-empty set (the reference needs image and text); with one
modality the side vector is :math:`\mathbf{h}/2` and :math:`p_{ij} = s_{ij}`. Before
2026-11-27 the code computed :math:`(\sum_m \mathbf{h}^m - \mathbf{c}) / (M + 1)`, the
reference's formula read literally, which is 0 for one modality: text-only SOIL then
had no side view (and its side/content InfoNCE a constant), so its ml-100k results of
before that date are not SOIL's.

Config keys (defaults in ``recbole_models/yaml/soil.yaml``): ``embedding_size``,
``knn_k``, ``knn_i`` (:math:`k_i`), ``knn_a`` (:math:`k_a`), ``n_ui_layers``,
``n_layers``, ``cl_loss``, ``cl_loss2``, ``graph_refinement`` ("+GR": the similarity
graph :math:`\tilde{S}^m` becomes MLLMRec's refined graph; the interest graph, which is
SOIL's own, stays), ``use_modalities``.

Built sparse and block-wise, never ``N x N`` (the reference builds dense
similarity, interest and attractive matrices). Deliberate differences from the
reference code: it normalises the user-item attractive block with USER degrees
indexed by ITEM ids (``deg_inv_sqrt[col]`` with ``deg`` of size ``n_users``: unrelated
degrees, and an index error when there are more items than users) — here that block
is the user-item block of :math:`\hat{B}`; negative similarities are left out of the
interest graph and non-positive products out of the attractive edges (the reference's
non-negative CNN/text features never produce them, random or centred features would give
negative degrees and NaN); the reference's normalisation (``get_sparse_laplacian`` of its
``utils/utils.py``) raises every normalised weight :math:`\le 10^{-7}`, negative ones
included, to :math:`10^{-7}`, not done here (negligible with non-negative features); the
attractive top-k is taken exactly from each item row's top :math:`k_a + \max_u |I_u|`
(the same set up to ties). ``tests/test_crosscheck_soil.py`` checks the rest against the
reference class.
"""
from typing import Dict, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recbole_models.model.gume import info_nce
from recbole_models.model.multimodal import MultimodalRecommender, normalize_adjacency

#: Item rows per block when scanning similarities (bounds the [block, N] buffers).
BLOCK_ELEMENTS = 1 << 24


def _blocks(n_rows: int, n_cols: int):
    size = max(1, BLOCK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, size):
        yield start, min(start + size, n_rows)


def interest_graph(x_norm: Tensor, users: Tensor, items: Tensor, interest_cols: Tensor) -> Tensor:
    r"""Sparse :math:`G` ``[N, N]`` over rows of ``x_norm`` (L2-normalised ``[N, d]``).

    ``users``/``items`` are the training rows; ``interest_cols`` is ``[n_users, c]``
    (each user's interest items, ``-1`` = none).
    """
    n = x_norm.size(0)
    cols = interest_cols.index_select(0, users)                  # [nnz, c]
    rows = items.view(-1, 1).expand_as(cols)
    valid = cols >= 0
    rows, cols = rows[valid], cols[valid]
    # Pairs in chunks: gathering both sides of every pair at once is [pairs, d] twice
    # (about 40 GB at Amazon-Baby size with 4,096-d image features).
    chunk = max(1, BLOCK_ELEMENTS // max(x_norm.size(1), 1))
    values = torch.cat([(x_norm.index_select(0, rows[i:i + chunk]) * x_norm.index_select(0, cols[i:i + chunk])).sum(-1)
                        for i in range(0, rows.numel(), chunk)]) if rows.numel() else x_norm.new_zeros(0)
    keep = values > 0
    g = torch.sparse_coo_tensor(torch.stack([rows[keep], cols[keep]]), values[keep], (n, n))
    return g.coalesce()


def side_embedding(h: Tensor, common: Tensor) -> Tensor:
    r"""The attention fuser's output :math:`\mathbf{s} = \big(\sum_m (\mathbf{h}^m -
    \mathbf{c}) + \mathbf{c}\big) / (M + 1)`: the mean of the :math:`M` modality-specific
    parts and the common part. With the reference's two modalities this is its
    :math:`(\mathbf{h}^v + \mathbf{h}^t - \mathbf{c}) / 3`; with one modality it is
    :math:`\mathbf{h}/2`. (Read literally for any :math:`M`, the reference's
    :math:`(\sum_m \mathbf{h}^m - \mathbf{c}) / (M + 1)` would be 0 for one modality,
    since :math:`\mathbf{c} = \mathbf{h}` there, and silently drop the modality branch.)

    Args:
        h: ``[M, N, d]`` the modality views.
        common: ``[N, d]`` their attention-weighted sum :math:`\mathbf{c}`.
    """
    m = h.size(0)
    return (h.sum(dim=0) - (m - 1) * common) / (m + 1)


class SOIL(MultimodalRecommender):
    r"""SOIL: interest-aware item graphs and attractive second-order user-item edges."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = int(config["embedding_size"])
        self.knn_k = int(config["knn_k"])
        self.knn_i = int(config["knn_i"])
        self.knn_a = int(config["knn_a"])
        self.n_ui_layers = int(config["n_ui_layers"])
        self.n_layers = int(config["n_layers"])
        self.cl_loss = float(config["cl_loss"])
        self.cl_loss2 = float(config["cl_loss2"])
        self.temperature = 0.2

        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.trs = nn.ModuleDict({m: nn.Linear(x.size(1), d) for m, x in self.modality_features.items()})
        self.maps = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid()) for m in self.modalities})
        self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        for m, x in self.modality_features.items():
            self.register_buffer(f"feat_{m}", x, persistent=False)

        normed = {m: F.normalize(x[1:], dim=1) for m, x in self.modality_features.items()}
        # Training rows over items 1..N-1 (row 0 is [PAD]).
        keep = self.inter_index[1] > 0
        users, items = self.inter_index[0, keep], self.inter_index[1, keep] - 1
        interest = self._interest_items(normed, users, items)
        for m, x in self.modality_features.items():
            g = interest_graph(normed[m], users, items, interest)
            g = self._pad(normalize_adjacency(g, "row"))
            s = normalize_adjacency(self.item_item_adjacency(x, self.knn_k, weighted=True), "row")
            self.register_buffer(f"item_adj_{m}", (g + s).coalesce(), persistent=False)
        joint, r_block = self._propagation_graphs(self._attractive(normed, users, items))
        self.register_buffer("joint_adj", joint, persistent=False)
        self.register_buffer("r_adj", r_block, persistent=False)

    # -- graph construction ---------------------------------------------------------------
    def _pad(self, g: Tensor) -> Tensor:
        """``[N-1, N-1]`` over items 1.. -> ``[N, N]`` with the empty [PAD] row/column."""
        idx = g.indices() + 1
        return torch.sparse_coo_tensor(idx, g.values(), (self.n_items, self.n_items)).coalesce()

    def _interest_items(self, normed: Dict[str, Tensor], users: Tensor, items: Tensor) -> Tensor:
        r"""``[n_users, M * k_i]`` item ids: per modality the top-:math:`k_i` of
        :math:`\sum_{i \in I_u} s^m_{i\cdot}` (``-1`` where a user has no items;
        duplicates across modalities become ``-1``)."""
        n = next(iter(normed.values())).size(0)
        r = torch.sparse_coo_tensor(torch.stack([users, items]), torch.ones(users.numel()),
                                    (self.n_users, n)).coalesce()
        has_items = torch.zeros(self.n_users, dtype=torch.bool)
        has_items[users] = True
        k = min(self.knn_i, n)
        parts = []
        for x in normed.values():
            profile = torch.sparse.mm(r, x)                       # sum of the users' item vectors
            top = torch.empty(self.n_users, k, dtype=torch.long)
            for start, end in _blocks(self.n_users, n):
                top[start:end] = torch.topk(profile[start:end] @ x.t(), k, dim=1).indices
            parts.append(top)
        cols = torch.cat(parts, dim=1)
        cols[~has_items] = -1
        # The union over modalities: a repeated column counts once.
        sorted_cols, _ = torch.sort(cols, dim=1)
        dup = torch.zeros_like(sorted_cols, dtype=torch.bool)
        dup[:, 1:] = sorted_cols[:, 1:] == sorted_cols[:, :-1]
        return sorted_cols.masked_fill(dup, -1)

    def _attractive(self, normed: Dict[str, Tensor], users: Tensor, items: Tensor) -> Tensor:
        r"""Sparse ``[n_users, N]`` attractive weights :math:`B_{UI}` (items 1.. shifted back)."""
        n = next(iter(normed.values())).size(0)
        history = torch.bincount(users, minlength=self.n_users)
        k_max = min(self.knn_a + int(history.max()), n)
        top_val = torch.empty(n, k_max)
        top_idx = torch.empty(n, k_max, dtype=torch.long)
        for start, end in _blocks(n, n):
            p = None
            for x in normed.values():
                s = x[start:end] @ x.t()
                p = s if p is None else p * s
            top_val[start:end], top_idx[start:end] = torch.topk(p, k_max, dim=1)
        order = torch.argsort(users, stable=True)
        users, items = users[order], items[order]
        bounds = torch.cumsum(history, 0)
        rows, cols, vals = [], [], []
        for u in torch.nonzero(history).view(-1).tolist():
            own = items[bounds[u] - history[u]:bounds[u]]
            k_u = min(self.knn_a + own.numel(), own.numel() * k_max)
            v, pos = torch.topk(top_val.index_select(0, own).view(-1), k_u)
            positive = v > 0
            rows.append(torch.full((int(positive.sum()),), u, dtype=torch.long))
            cols.append(top_idx.index_select(0, own).view(-1).index_select(0, pos)[positive])
            vals.append(v[positive])
        b = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols) + 1]), torch.cat(vals),
                                    (self.n_users, self.n_items))
        return b.coalesce()

    def _propagation_graphs(self, b: Tensor) -> Tuple[Tensor, Tensor]:
        nu, n = self.n_users, self.n_users + self.n_items
        u, i = self.inter_index
        ones = torch.ones(u.numel())
        a = torch.sparse_coo_tensor(torch.stack([torch.cat([u, i + nu]), torch.cat([i + nu, u])]),
                                    torch.cat([ones, ones]), (n, n))
        a_hat = normalize_adjacency(a.coalesce(), "row")
        bu, bi = b.indices()
        b_sym = torch.sparse_coo_tensor(torch.stack([torch.cat([bu, bi + nu]), torch.cat([bi + nu, bu])]),
                                        torch.cat([b.values(), b.values()]), (n, n))
        b_hat = normalize_adjacency(b_sym.coalesce(), "row")
        joint = (a_hat + b_hat * 0.5).coalesce()
        idx, val = joint.indices(), joint.values()
        block = (idx[0] < nu) & (idx[1] >= nu)
        r_block = torch.sparse_coo_tensor(torch.stack([idx[0, block], idx[1, block] - nu]), val[block],
                                          (nu, self.n_items)).coalesce()
        return joint, r_block

    # -- model ----------------------------------------------------------------------------
    def _forward(self):
        item_id = self.item_id_embedding.weight
        ego = torch.cat([self.user_embedding.weight, item_id])
        layers = [ego]
        for _ in range(self.n_ui_layers):
            ego = torch.sparse.mm(self.joint_adj, ego)
            layers.append(ego)
        content = torch.stack(layers, dim=1).mean(dim=1)
        h = []
        for m in self.modalities:
            h_items = item_id * self.maps[m](self.trs[m](getattr(self, f"feat_{m}")))
            adj = getattr(self, f"item_adj_{m}")
            for _ in range(self.n_layers):
                h_items = torch.sparse.mm(adj, h_items)
            h.append(torch.cat([torch.sparse.mm(self.r_adj, h_items), h_items]))
        h = torch.stack(h)                                                  # [M, U+I, d]
        alpha = torch.softmax(self.attention(h).squeeze(-1), dim=0)
        common = (alpha.unsqueeze(-1) * h).sum(dim=0)
        side = side_embedding(h, common)
        return content + side, side, content

    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        return torch.split(self._forward()[0], [self.n_users, self.n_items])

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID] + self.n_users
        neg = interaction[self.NEG_ITEM_ID] + self.n_users
        final, side, content = self._forward()
        e_u, e_p, e_n = final.index_select(0, user), final.index_select(0, pos), final.index_select(0, neg)
        bpr = -F.logsigmoid((e_u * e_p).sum(-1) - (e_u * e_n).sum(-1)).mean()
        t = self.temperature
        s_p, c_p = side.index_select(0, pos), content.index_select(0, pos)
        cl = info_nce(s_p, c_p, t) + info_nce(side.index_select(0, user), content.index_select(0, user), t)
        cl2 = info_nce(e_u, c_p, t) + info_nce(e_u, s_p, t)
        return bpr + self.cl_loss * cl + self.cl_loss2 * cl2
