r"""
SLMRec
################################################

Reference:
    Zhulin Tao, Xiaohao Liu, Yewei Xia, Xiang Wang, Lifang Yang, Xianglin Huang and
    Tat-Seng Chua. "Self-supervised Learning for Multimedia Recommendation." IEEE
    Transactions on Multimedia, 2022. Reference code consulted for behaviour: the
    MMRec toolbox's ``src/models/slmrec.py`` and ``src/configs/model/SLMRec.yaml``
    (enoche/MMRec), which runs the "FAC" self-supervised task.

Model. One LightGCN branch per view: the item ID view and one view per modality
:math:`m` (its L2-normalised frozen features :math:`\mathbf{f}^m_i` projected to
:math:`d`). Every branch starts the users from the same ID table :math:`E_U`:

.. math::
    \mathbf{X}^{id} = [E_U; E_I], \qquad
    \mathbf{X}^{m} = [E_U;\ \mathrm{normalize}(F^m) W_m^\top + \mathbf{b}_m], \qquad
    \mathbf{Z}^{v} = \tfrac{1}{L+1} \textstyle\sum_{l=0}^{L} \hat{A}^{l} \mathbf{X}^{v}

with :math:`\hat{A} = D^{-1/2} A D^{-1/2}` the symmetric-normalised bipartite
TRAINING graph (MMRec's ``adj_type: pre``). The final vectors fuse the branches,
separately for users and items:

.. math::
    \mathbf{e}_u = W_U\, \mathrm{fuse}(\mathbf{z}^{id}_u, \mathbf{z}^{m_1}_u, \dots) + \mathbf{b}_U,
    \qquad
    \mathbf{e}_i = W_I\, \mathrm{fuse}(\mathbf{z}^{id}_i, \mathbf{z}^{m_1}_i, \dots) + \mathbf{b}_I,
    \qquad \hat{y}_{ui} = \mathbf{e}_u^\top \mathbf{e}_i

(``fuse`` = concatenation, or the mean). Main task: in-batch InfoNCE over the
batch's (user, positive item) pairs with cosine logits,

.. math::
    \mathcal{L}_{main} = -\tfrac{1}{B} \textstyle\sum_{b}
        \log \frac{\exp(\cos(\mathbf{e}_{u_b}, \mathbf{e}_{i_b}) / \tau)}
                  {\sum_{b'} \exp(\cos(\mathbf{e}_{u_b}, \mathbf{e}_{i_{b'}}) / \tau)}

(RecBole's sampled negative is not used, as in the reference, whose loader also
draws one). Self-supervised task "FAC" (fine and coarse-grained spaces): the ID
branch's item vector is mapped through a chain of spaces, one per modality, and in
space :math:`k` it must pick its own item's modality-:math:`m_k` vector out of the
batch:

.. math::
    \mathbf{a}^{0}_b = \mathbf{z}^{id}_{i_b}, \quad
    \mathbf{a}^{k}_b = G_k \mathbf{a}^{k-1}_b + \mathbf{g}_k, \quad
    \mathbf{t}^{k}_b = H_k \mathbf{z}^{m_k}_{i_b} + \mathbf{h}_k, \quad
    \mathcal{L}_{ssl} = \textstyle\sum_{k=1}^{K} -\tfrac{1}{B} \sum_b
        \log \frac{\exp(\mathbf{a}^{k\top}_b \mathbf{t}^{k}_b / \tau_{ssl})}
                  {\sum_{b'} \exp(\mathbf{a}^{k\top}_b \mathbf{t}^{k}_{b'} / \tau_{ssl})}

(raw dot products, no normalisation, as in the reference). The spaces have size
:math:`d` except the last, which has :math:`d/2` when there are two or more
modalities (the coarse space of the paper's text; with one modality its single
space has :math:`d`, as the reference's visual-only branch). Modalities enter the
chain in the order the model holds them (the dataset's ``modalities`` key, or
``use_modalities``): put text last, as the paper does (image: fine, text: coarse).
Loss: :math:`\mathcal{L} = \mathcal{L}_{main} + \alpha\, \mathcal{L}_{ssl}`, plus
the optimiser's weight decay (``weight_decay``, 1e-4 in the reference).

With one modality there are two branches (ID + it) and one FAC space; with two,
three branches and two spaces (the reference's image + text); with more, one more
branch and one more space per modality.

Config keys (defaults in ``recbole_models/yaml/slmrec.yaml``):

- ``embedding_size`` (int): :math:`d` (64; the reference's ``recdim``).
- ``n_layers`` (int): LightGCN layers :math:`L` of every branch (3; ``layer_num``).
- ``temp`` (float): :math:`\tau` of the main InfoNCE (0.2).
- ``ssl_task`` (str): only ``"FAC"`` (see below).
- ``ssl_alpha`` (float): :math:`\alpha` (0.1; reference grid 0.01, 0.05, 0.1, 0.5, 1.0).
- ``ssl_temp`` (float): :math:`\tau_{ssl}` (0.2; grid 0.1, 0.2, 0.5, 1.0).
- ``mm_fusion_mode`` (str): ``"concat"`` or ``"mean"`` of the branches (``concat``).
- ``init`` (str): ``"xavier"`` (uniform) or ``"normal"`` (std 0.1) for the ID tables.
- ``use_modalities`` (list or ``None``): the dataset's modalities to use (``None``: all).
- ``graph_refinement`` (bool): must stay ``False``: SLMRec has no item-item graph,
  so "+GR" has no place in it.

Deliberate differences from the reference code:

- Only the "FAC" task it runs: its "FD", "FM" and "FD+FM" branches read a config
  key (``data.input.dataset``) and audio projections (``a_dense``) that do not
  exist there, so they cannot run; ``ssl_task`` names anything else an error.
- FAC without audio: the reference still passes the ID vector through the
  audio stage's map before the text space (``g_iva_ivat(g_iv_iva(.))``, two affine
  maps with no loss in between, plus an audio head never used); here the chain
  has one map per modality present. Its ``reg`` key is read nowhere and is left out.
- ``mm_fusion_mode: mean`` feeds a :math:`d`-wide input to the fusion layers (the
  reference sizes them for the concatenation whatever the mode, so "mean" fails there).
- ``full_sort_predict`` scores with the CURRENT weights (a weight-keyed cache): the
  reference scores with vectors cached in its last training step, computed before
  that step's optimiser update. It also applies a sigmoid to the scores, which does
  not change a ranking and is left out.
- RecBole's ``[PAD]`` item (row 0) has no interactions and zero features; it is
  never a batch item, so it takes part in no loss.
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mllmrec_pyg.nn import LightGCNPropagation
from recbole_models.model.multimodal import MultimodalRecommender


def in_batch_infonce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    r"""Mean over rows of :math:`-\log \mathrm{softmax}_j(\mathbf{a}_i^\top \mathbf{b}_j / t)_i`:
    row :math:`i` of ``b`` is the positive of row :math:`i` of ``a``, the other rows its negatives."""
    logits = a @ b.t() / temperature
    return F.cross_entropy(logits, torch.arange(a.size(0), device=a.device))


class SLMRec(MultimodalRecommender):
    r"""SLMRec: per-view LightGCN, fused; in-batch InfoNCE + FAC self-supervision."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        if self.graph_refinement:
            raise ValueError("SLMRec has no item-item graph: config `graph_refinement` must be False")
        self.embedding_size = int(config["embedding_size"])
        self.n_layers = int(config["n_layers"])
        self.temp = float(config["temp"])
        self.ssl_alpha = float(config["ssl_alpha"])
        self.ssl_temp = float(config["ssl_temp"])
        if config["ssl_task"] != "FAC":
            raise ValueError(f"config `ssl_task` must be 'FAC' (the only task the reference runs), "
                             f"got {config['ssl_task']!r}")
        self.mm_fusion_mode = config["mm_fusion_mode"]
        if self.mm_fusion_mode not in ("concat", "mean"):
            raise ValueError(f"config `mm_fusion_mode` must be 'concat' or 'mean', got {self.mm_fusion_mode!r}")
        init = config["init"]
        if init not in ("xavier", "normal"):
            raise ValueError(f"config `init` must be 'xavier' or 'normal', got {init!r}")
        d = self.embedding_size

        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        for table in (self.user_embedding, self.item_embedding):
            if init == "xavier":
                nn.init.xavier_uniform_(table.weight)
            else:
                nn.init.normal_(table.weight, std=0.1)

        self.dense = nn.ModuleDict()
        for m in self.modalities:
            self.register_buffer(f"features_{m}", F.normalize(self.modality_features[m], dim=1),
                                 persistent=False)
            self.dense[m] = self._linear(self.modality_features[m].size(1), d)

        n_views = len(self.modalities) + 1
        fused = d * n_views if self.mm_fusion_mode == "concat" else d
        self.user_fusion = self._linear(fused, d)
        self.item_fusion = self._linear(fused, d)

        # FAC: space k has size d, the last d // 2 when there are several modalities.
        K = len(self.modalities)
        sizes = [d] * K
        if K > 1:
            sizes[-1] = d // 2
        self.fac_anchor = nn.ModuleList(self._linear(d if k == 0 else sizes[k - 1], sizes[k])
                                        for k in range(K))
        self.fac_target = nn.ModuleList(self._linear(d, sizes[k]) for k in range(K))

        # A sparse adjacency (PyG's spmm path), not edge_index messages: 5x faster per
        # batch on CPU, and SLMRec propagates every view at every batch.
        self.register_sparse("ui_adj", self.user_item_adjacency())
        self.propagate = LightGCNPropagation(num_layers=self.n_layers, combine="mean")

    @staticmethod
    def _linear(d_in: int, d_out: int) -> nn.Linear:
        layer = nn.Linear(d_in, d_out)
        nn.init.xavier_uniform_(layer.weight)  # the bias keeps PyTorch's default, as in the reference
        return layer

    # -- representations --------------------------------------------------------------
    def views(self) -> List[Tuple[Tensor, Tensor]]:
        r"""``[(Z_U, Z_I)]`` of the ID branch, then of each modality's branch."""
        users = self.user_embedding.weight
        inputs = [self.item_embedding.weight]
        inputs += [self.dense[m](getattr(self, f"features_{m}")) for m in self.modalities]
        adj = self.sparse("ui_adj")  # symmetric, so it is its own adj_t
        out = []
        for items in inputs:
            z = self.propagate(torch.cat([users, items]), adj)
            out.append(torch.split(z, [self.n_users, self.n_items]))
        return out

    def fuse(self, views: List[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        users = [u for u, _ in views]
        items = [i for _, i in views]
        if self.mm_fusion_mode == "concat":
            u, i = torch.cat(users, dim=1), torch.cat(items, dim=1)
        else:
            u, i = torch.stack(users).mean(0), torch.stack(items).mean(0)
        return self.user_fusion(u), self.item_fusion(i)

    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        return self.fuse(self.views())

    # -- losses ------------------------------------------------------------------------
    def fac_loss(self, views: List[Tuple[Tensor, Tensor]], item: Tensor) -> Tensor:
        r""":math:`\mathcal{L}_{ssl}` over the batch items ``item``."""
        anchor = views[0][1].index_select(0, item)
        loss = anchor.new_zeros(())
        for k in range(len(self.modalities)):
            anchor = self.fac_anchor[k](anchor)
            target = self.fac_target[k](views[k + 1][1].index_select(0, item))
            loss = loss + in_batch_infonce(anchor, target, self.ssl_temp)
        return loss

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        views = self.views()
        e_u, e_i = self.fuse(views)
        u = F.normalize(e_u.index_select(0, user), dim=1)
        i = F.normalize(e_i.index_select(0, pos), dim=1)
        main = in_batch_infonce(u, i, self.temp)
        return main + self.ssl_alpha * self.fac_loss(views, pos)
