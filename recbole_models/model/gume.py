r"""
GUME
################################################

Reference:
    Guojiao Lin, Zhen Meng, Dongjie Wang, Qingqing Long, Yuanchun Zhou and Meng Xiao.
    "GUME: Graphs and User Modalities Enhancement for Long-Tail Multimodal
    Recommendation." CIKM 2024. Reference code consulted for behaviour:
    NanGongNingYi/GUME (``src/models/gume.py``, an MMRec fork).

Graphs. Per modality :math:`m` the weighted cosine k-NN graph of the item features
(top ``knn_k`` per item, the item itself included), symmetrically normalised with its
row sums, :math:`S^m`. *Graph enhancement*: item :math:`j` becomes a neighbour of
item :math:`i` in the user-item graph when :math:`j \ne i` is in :math:`i`'s top-k list
in EVERY modality (image ∩ text with two modalities), giving the binary item-item
block :math:`E`; the joint matrix over users then items

.. math::
    A = \begin{pmatrix} 0 & R \\ R^\top & E \end{pmatrix}, \qquad
    \hat{A} = D^{-1/2} A D^{-1/2},\ D = \operatorname{diag}(A\mathbf{1})

and :math:`\hat{R}` its user-item block.

Representations (:math:`\mathbf{e}` ID embeddings, :math:`\mathbf{f}^m` learnable
modality features initialised from the files, :math:`\sigma` the sigmoid):

.. math::
    \mathbf{x}^m_i &= \mathbf{e}_i \odot \sigma(W^m_2 (W^m_1 \mathbf{f}^m_i + b^m_1) + b^m_2), \quad
    \mathbf{h}^m_I = (S^m)^{L_{ii}} \mathbf{x}^m, \quad \mathbf{h}^m_U = \hat{R}\,\mathbf{h}^m_I \\
    \mathbf{z}^{id} &= \operatorname{mean}_{l=0..L_{ui}} \hat{A}^l [\mathbf{e}_U; \mathbf{e}_I], \quad
    \mathbf{z}^{m} = \operatorname{mean}_{l=0..L_{ui}} \hat{A}^l [\mathbf{u}^m; \mathbf{h}^m_I], \quad
    \mathbf{z}^{mm} = \operatorname{mean}_m \mathbf{z}^m \\
    \alpha^m &= \operatorname{softmax}_m\big(w^\top \tanh(W_a \mathbf{h}^m + b_a)\big), \quad
    \mathbf{c} = \textstyle\sum_m \alpha^m \mathbf{h}^m \\
    \mathbf{g} &= \tfrac{1}{M+1}\big(\mathbf{c} + \textstyle\sum_m \sigma(B^m \mathbf{z}^{id} + b^m) \odot (\mathbf{h}^m - \mathbf{c})\big),
    \qquad \text{final} = \mathbf{z}^{id} + \mathbf{g}

with :math:`\mathbf{u}^m` a free per-modality user embedding. Loss: BPR on the final
vectors + ``reg_weight_1``·½‖batch vectors‖²/B + ``vt_loss``·(mean over modality pairs of
|var−var| + |mean−mean| of :math:`\mathbf{h}^m`) + ``bm_loss``·(InfoNCE(:math:`\mathbf{g}_u,
\mathbf{z}^{id}_u`) + InfoNCE(:math:`\mathbf{g}_i, \mathbf{z}^{id}_i`), ``bm_temp``)
+ ``um_loss``·(InfoNCE(:math:`\mathbf{z}^{mm}_u, \mathbf{g}_u`) + two noise-perturbed
InfoNCE terms, ``um_temp``) + ``reg_weight_2``·½‖:math:`\mathbf{z}^{mm}_{i^+}`‖²/B.

Modalities: any non-empty set; with one modality the enhancement edges are its own
top-k lists without the self-loop, :math:`\alpha = 1`, the fine-grained terms vanish
and the alignment term is 0 (the reference requires image and text).

Config keys (defaults in ``recbole_models/yaml/gume.yaml``, the reference's Baby values):
``embedding_size`` (64), ``knn_k`` (10), ``n_ui_layers`` :math:`L_{ui}` (3), ``n_layers``
:math:`L_{ii}` (2), ``reg_weight_1`` (1e-5), ``reg_weight_2`` (0.1), ``bm_loss`` (0.01),
``bm_temp`` (0.4), ``um_loss`` (0.01), ``um_temp`` (0.1), ``vt_loss`` (0.1),
``graph_refinement`` ("+GR": :math:`S^m` becomes MLLMRec's refined graph, normalised the
same way; the enhancement edges still come from the plain top-k lists, which are what
GUME intersects), ``use_modalities``.

Deliberate differences from the reference code: it pairs the image and text lists by
position assuming exactly 10 neighbours per item (``len(...) == 10``, whatever
``knn_k`` says) — here the lists have ``knn_k`` entries; its graph files and
``inter.json`` are cached under the dataset directory keyed by ``knn_k`` only (a stale
cache survives a change of features) — here nothing is cached on disk; its regulariser
divides by the configured batch size — here by the actual batch size; and it hard-codes
``.cuda()``. RecBole's [PAD] user and item, rows the reference does not have, are left
out of the alignment statistics (before 2026-11-27 they were counted: a two-modality
loss slightly off, text-only runs unaffected). ``tests/test_crosscheck_gume.py`` checks
the rest against the reference class.
"""
from itertools import combinations
from typing import Dict, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mllmrec_pyg.transforms import threshold_knn_graph
from recbole_models.model.multimodal import MultimodalRecommender, normalize_adjacency, sparse_from_edges


def info_nce(view1: Tensor, view2: Tensor, temperature: float) -> Tensor:
    r"""Mean over rows of :math:`-\log \frac{\exp(\cos(a_r, b_r)/\tau)}{\sum_s \exp(\cos(a_r, b_s)/\tau)}`."""
    a, b = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = a @ b.t() / temperature
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def shared_neighbour_edges(features: Dict[str, Tensor], k: int) -> Tensor:
    r"""``[2, E]`` (item, neighbour) pairs, internal ids of rows ``1..``: :math:`j \ne i` in
    :math:`i`'s cosine top-``k`` list in every modality."""
    pairs = None
    for x in features.values():
        ei, _ = threshold_knn_graph(x[1:].detach(), min(k, x.size(0) - 1), threshold=None)
        n = x.size(0)
        keys = set(((ei[1] + 1) * n + (ei[0] + 1)).tolist())  # (target i, source j)
        pairs = keys if pairs is None else pairs & keys
    n = next(iter(features.values())).size(0)
    keys = torch.tensor(sorted(pairs), dtype=torch.long)
    rows, cols = keys // n, keys % n
    keep = rows != cols
    return torch.stack([rows[keep], cols[keep]])


class GUME(MultimodalRecommender):
    r"""GUME: modality-enhanced user-item graph, attribute separation, user-modality contrast."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = int(config["embedding_size"])
        self.knn_k = int(config["knn_k"])
        self.n_ui_layers = int(config["n_ui_layers"])
        self.n_layers = int(config["n_layers"])
        for key in ("reg_weight_1", "reg_weight_2", "bm_loss", "bm_temp", "um_loss", "um_temp", "vt_loss"):
            setattr(self, key, float(config[key]))

        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        self.modality_user = nn.ModuleDict({m: nn.Embedding(self.n_users, d) for m in self.modalities})
        self.space_trans = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(x.size(1), d), nn.Linear(d, d), nn.Sigmoid())
            for m, x in self.modality_features.items()})
        self.behavior = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Sigmoid())
                                       for m in self.modalities})
        self.separate_coarse = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        # Xavier for the embeddings, PyTorch's default for the linear layers (as the reference).
        for emb in [self.user_embedding, self.item_id_embedding, *self.modality_user.values()]:
            nn.init.xavier_uniform_(emb.weight)
        # Learnable features initialised from the files (the reference's freeze=False).
        self.feature_embedding = nn.ParameterDict({
            m: nn.Parameter(x.clone()) for m, x in self.modality_features.items()})

        for m, x in self.modality_features.items():
            adj = normalize_adjacency(self.item_item_adjacency(x, self.knn_k, weighted=True), "row")
            self.register_buffer(f"item_adj_{m}", adj, persistent=False)
        joint, r_hat = self._joint_adjacency(shared_neighbour_edges(self.modality_features, self.knn_k))
        self.register_buffer("joint_adj", joint, persistent=False)
        self.register_buffer("r_hat", r_hat, persistent=False)
        real = torch.ones(self.n_users + self.n_items, dtype=torch.bool)
        real[[0, self.n_users]] = False  # RecBole's [PAD] user and item
        self.register_buffer("real_rows", real, persistent=False)

    def _joint_adjacency(self, enhancement: Tensor) -> Tuple[Tensor, Tensor]:
        u, i = self.inter_index
        nu = self.n_users
        n = nu + self.n_items
        rows = torch.cat([u, i + nu, enhancement[0] + nu])
        cols = torch.cat([i + nu, u, enhancement[1] + nu])
        adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(rows.numel()), (n, n)).coalesce()
        adj = normalize_adjacency(adj, "row")
        idx, val = adj.indices(), adj.values()
        block = (idx[0] < nu) & (idx[1] >= nu)
        r_hat = torch.sparse_coo_tensor(torch.stack([idx[0, block], idx[1, block] - nu]), val[block],
                                        (nu, self.n_items)).coalesce()
        return adj, r_hat

    def _conv_ui(self, users: Tensor, items: Tensor) -> Tensor:
        ego = torch.cat([users, items])
        layers = [ego]
        for _ in range(self.n_ui_layers):
            ego = torch.sparse.mm(self.joint_adj, ego)
            layers.append(ego)
        return torch.stack(layers, dim=1).mean(dim=1)

    def _forward(self):
        item_id = self.item_id_embedding.weight
        z_id = self._conv_ui(self.user_embedding.weight, item_id)
        explicit, extended = {}, []
        for m in self.modalities:
            h_items = item_id * self.space_trans[m](self.feature_embedding[m])
            adj = getattr(self, f"item_adj_{m}")
            for _ in range(self.n_layers):
                h_items = torch.sparse.mm(adj, h_items)
            explicit[m] = torch.cat([torch.sparse.mm(self.r_hat, h_items), h_items])
            extended.append(self._conv_ui(self.modality_user[m].weight, h_items))
        z_mm = torch.stack(extended).mean(dim=0)
        h = torch.stack([explicit[m] for m in self.modalities])              # [M, U+I, d]
        alpha = torch.softmax(self.separate_coarse(h).squeeze(-1), dim=0)    # [M, U+I]
        coarse = (alpha.unsqueeze(-1) * h).sum(dim=0)
        fine = [self.behavior[m](z_id) * (explicit[m] - coarse) for m in self.modalities]
        g = (coarse + torch.stack(fine).sum(dim=0)) / (len(self.modalities) + 1)
        return z_id + g, g, z_id, z_mm, explicit

    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        final = self._forward()[0]
        return torch.split(final, [self.n_users, self.n_items])

    @staticmethod
    def _half_sq(x: Tensor) -> Tensor:
        return 0.5 * x.pow(2).sum()

    def _noise_info_nce(self, ids: Tensor, emb: Tensor) -> Tensor:
        def perturb(x):
            return x + torch.sign(x) * F.normalize(torch.rand_like(x), dim=-1) * 0.1

        return info_nce(perturb(emb).index_select(0, ids), perturb(emb).index_select(0, ids), self.um_temp)

    def alignment(self, explicit: Dict[str, Tensor]) -> Tensor:
        """Mean over modality pairs of |var a − var b| + |mean a − mean b| (0 for one modality),
        over the real users and items: RecBole's [PAD] user and item (rows 0 and ``n_users``,
        zero vectors the reference does not have) would shrink both statistics."""
        x = {m: explicit[m][self.real_rows] for m in self.modalities}
        terms = [(x[a].var() - x[b].var()).abs() + (x[a].mean() - x[b].mean()).abs()
                 for a, b in combinations(self.modalities, 2)]
        return torch.stack(terms).mean() if terms else self.user_embedding.weight.new_zeros(())

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        final, g, z_id, z_mm, explicit = self._forward()
        nu, b = self.n_users, user.numel()
        items = pos + nu, neg + nu
        e_u, e_p, e_n = final.index_select(0, user), final.index_select(0, items[0]), final.index_select(0, items[1])
        bpr = -F.logsigmoid((e_u * e_p).sum(-1) - (e_u * e_n).sum(-1)).mean()
        reg1 = self.reg_weight_1 * (self._half_sq(e_u) + self._half_sq(e_p) + self._half_sq(e_n)) / b
        g_u, g_p = g.index_select(0, user), g.index_select(0, items[0])
        bm = self.bm_loss * (info_nce(g_u, z_id.index_select(0, user), self.bm_temp)
                             + info_nce(g_p, z_id.index_select(0, items[0]), self.bm_temp))
        z_mm_users = z_mm[:nu]
        um = self.um_loss * (info_nce(z_mm_users.index_select(0, user), g_u, self.um_temp)
                             + self._noise_info_nce(user, g[:nu]) + self._noise_info_nce(user, z_mm_users))
        reg2 = self.reg_weight_2 * self._half_sq(z_mm.index_select(0, items[0])) / b
        return bpr + reg1 + self.vt_loss * self.alignment(explicit) + bm + um + reg2
