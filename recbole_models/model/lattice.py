r"""
LATTICE
################################################

Reference:
    Jinghao Zhang, Yanqiao Zhu, Qiang Liu, Shu Wu, Shuhui Wang and Liang Wang.
    "Mining Latent Structures for Multimedia Recommendation." ACM MM 2021.
    Reference code: github.com/CRIPAC-DIG/LATTICE and ``src/models/lattice.py`` of
    github.com/enoche/MMRec (consulted for behaviour).

Per modality :math:`m` with (trainable) features :math:`\mathbf{X}^m`:

.. math::
    K(\mathbf{Y})_{ij} &= \cos(\mathbf{y}_i, \mathbf{y}_j)\,\mathbb{1}[j \in \text{top-}k(i)]
        \ (\text{self included}), \qquad
    \mathcal{N}(A) = D^{-1/2} A D^{-1/2},\ D = \operatorname{diag}(A\mathbf{1}) \\
    \mathbf{w} &= \operatorname{softmax}(\boldsymbol{\alpha}) \ (\text{learnable, one per modality}) \\
    \tilde{S} &= \textstyle\sum_m w_m\, \mathcal{N}(K(\mathbf{X}^m))
        \quad \text{(original graphs, fixed structure)} \\
    \hat{S} &= \mathcal{N}\big(\textstyle\sum_m w_m\, K(\mathbf{X}^m W_m + b_m)\big)
        \quad \text{(learned from the projected features)} \\
    S &= (1-\lambda)\,\hat{S} + \lambda\,\tilde{S}, \qquad
    \mathbf{H} = S^{L}\,\mathbf{E}_I \\
    [\mathbf{Z}_U; \mathbf{Z}_I] &= \tfrac{1}{L_{ui}+1}\textstyle\sum_{l=0}^{L_{ui}}
        \bar{A}^l [\mathbf{E}_U; \mathbf{E}_I], \quad \bar{A} = D^{-1}(A + I), \qquad
    \mathbf{e}_u = \mathbf{z}_u, \quad \mathbf{e}_i = \mathbf{z}_i + \mathbf{h}_i / \|\mathbf{h}_i\| \\
    \mathcal{L} &= \mathrm{BPR} + \gamma\,\tfrac{1}{2B}(\|\mathbf{e}_u\|^2 + \|\mathbf{e}_i\|^2
        + \|\mathbf{e}_j\|^2)

(``cf_model: mf``: :math:`\mathbf{e}_u = \mathbf{E}_u`, :math:`\mathbf{e}_i = \mathbf{E}_i
+ \mathbf{h}_i/\|\mathbf{h}_i\|`.) Gradients reach :math:`W_m`, :math:`\mathbf{X}^m`
and :math:`\boldsymbol{\alpha}` through the values of the selected edges (top-k itself
is a selection).

When the graph is learned, as in the reference: :math:`S` is rebuilt, with gradients,
at the first training batch of every epoch (:meth:`pre_epoch_processing`, which the
base calls from the ``model.train()`` of RecBole's trainer); the other batches of the
epoch reuse it detached. Evaluation rebuilds it from the current weights.

Memory: :math:`\hat{S}` is *defined* through the dense :math:`N \times N` similarity of
the projected features, and the reference materialises it (several :math:`N \times N`
float tensors per modality, kept for autograd). Its maths needs no dense matrix: the
top-k of each row is selected block-wise without gradients
(:func:`mllmrec_pyg.transforms.threshold_knn_graph`), and the cosine of only the
selected pairs is recomputed with gradients, which gives the same values and the same
gradients (top-k is piecewise constant). :math:`S` is then sparse, :math:`O(Nk)`.
``benchmarks/lattice_graph_memory.py`` prints both at Amazon-Baby size (7,050 items).

Modalities: one original and one learned k-NN graph per modality, mixed by the
softmax weights; with one modality :math:`w = 1`.

"+GR" (``graph_refinement: True``): the original graph of modality :math:`m`,
:math:`K(\mathbf{X}^m)`, becomes MLLMRec's refined graph
(:meth:`MultimodalRecommender.item_item_adjacency`); the learned graph is unchanged.

Config keys (defaults in ``recbole_models/yaml/lattice.yaml``):

- ``embedding_size`` (int): ID embedding size (64).
- ``feat_embed_dim`` (int): projection size of the features for the learned graph (64).
- ``knn_k`` (int): :math:`k` of both graphs (10).
- ``lambda_coeff`` (float): :math:`\lambda`, weight of the original graph (0.9).
- ``n_layers`` (int): :math:`L`, propagations over :math:`S` (1).
- ``n_ui_layers`` (int): :math:`L_{ui}` (2; the reference's ``len(weight_size)``).
- ``cf_model`` (str): ``lightgcn`` or ``mf`` (``lightgcn``).
- ``reg_weight`` (float): :math:`\gamma` (1e-5, the original code's ``regs[0]``;
  MMRec grid [0, 1e-5, 1e-4, 1e-3]).
- ``use_modalities``, ``graph_refinement``, ``knn_threshold``, ``cooc_k``: see
  :class:`~recbole_models.model.multimodal.MultimodalRecommender`.

Where we differ from the reference code, deliberately:

- Sparse instead of dense graphs (above): same values and gradients, :math:`O(Nk)` memory.
- ``cf_model: ngcf`` (an option of the reference, not its default) is not implemented.
- A neighbour of non-positive cosine is dropped from both k-NN graphs (the reference
  keeps it; a row whose similarities sum below 0 gets a NaN degree). With real
  features and :math:`k \ll N` this changes nothing.
- The reference caches the original graphs in ``image_adj_{k}.pt`` keyed by ``k``
  alone (a new feature file reuses the stale graph) and moves them with ``.cuda()``;
  we build them from the features every time, on the model's device.
- Its learning-rate schedule (lr :math:`\cdot 0.96^{epoch/50}`) has no counterpart in
  RecBole 1.2.1's trainer: not applied.
"""
from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch_geometric.utils import scatter

from mllmrec_pyg.transforms import threshold_knn_graph
from recbole_models.model.multimodal import (MultimodalRecommender, bpr, drop_nonpositive, lightgcn_mean,
                                             normalize_adjacency, sparse_from_edges)

CF_MODELS = ("lightgcn", "mf")


def sym_normalize(index: Tensor, value: Tensor, n: int) -> Tensor:
    r"""Values of :math:`D^{-1/2} A D^{-1/2}` for the entries ``(index[0], index[1])`` of
    :math:`A` (duplicates add up), :math:`D` its row sums; differentiable in ``value``."""
    deg = scatter(value, index[0], 0, dim_size=n, reduce="sum")
    # pow on the empty rows' 0 would put 0 * inf = NaN into the (unused) gradient of deg.
    empty = deg == 0
    inv = deg.masked_fill(empty, 1.0).pow(-0.5).masked_fill(empty, 0.0)
    return inv.index_select(0, index[0]) * value * inv.index_select(0, index[1])


def propagate(index: Tensor, value: Tensor, x: Tensor) -> Tensor:
    r""":math:`A X` for the entries ``(index[0], index[1], value)`` of :math:`A` (duplicates add up)."""
    messages = x.index_select(0, index[1]) * value.unsqueeze(-1)
    return torch.zeros_like(x).index_add(0, index[0], messages)


def learned_knn_graph(y: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    r"""Entries ``(index, value)`` of the cosine k-NN matrix :math:`K(\mathbf{Y})` over rows
    1.. of ``y`` (row 0, RecBole's [PAD], has no entries), self included, neighbours of
    non-positive cosine dropped. The top-k is chosen block-wise without gradients; the
    values, the cosines of the chosen pairs only, carry gradients to ``y``: the values
    and gradients of the reference's dense :math:`N \times N` computation in
    :math:`O(Nk)` memory."""
    y = F.normalize(y, dim=1)
    ei, _ = threshold_knn_graph(y[1:].detach(), min(k, y.size(0) - 2), threshold=None)
    row, col = ei[1] + 1, ei[0] + 1  # edge (j -> i) is entry (i, j)
    value = (y.index_select(0, row) * y.index_select(0, col)).sum(-1)
    keep = value.detach() > 0  # a non-positive neighbour could make a degree negative
    return torch.stack([row[keep], col[keep]]), value[keep]


def mix_graphs(learned: List[Tuple[Tensor, Tensor]], originals: List[Tuple[Tensor, Tensor]], w: Tensor,
               lam: float, n: int) -> Tuple[Tensor, Tensor]:
    r"""Entries of :math:`(1-\lambda)\,\mathcal{N}(\sum_m w_m K_m) + \lambda \sum_m w_m O_m`
    from the learned :math:`K_m` and the normalised original :math:`O_m` (entry lists)."""
    l_index = torch.cat([ix for ix, _ in learned], 1)
    l_value = torch.cat([w[m] * v for m, (_, v) in enumerate(learned)])
    indices = [l_index] + [ix for ix, _ in originals]
    values = [(1.0 - lam) * sym_normalize(l_index, l_value, n)]
    values += [lam * w[m] * v for m, (_, v) in enumerate(originals)]
    return torch.cat(indices, 1), torch.cat(values)


class LATTICE(MultimodalRecommender):
    r"""LATTICE: item graphs learned from projected modality features, mixed with the original ones."""

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = int(config["embedding_size"])
        self.feat_embed_dim = int(config["feat_embed_dim"])
        self.knn_k = int(config["knn_k"])
        self.lambda_coeff = float(config["lambda_coeff"])
        self.n_layers = int(config["n_layers"])
        self.n_ui_layers = int(config["n_ui_layers"])
        self.reg_weight = float(config["reg_weight"])
        self.batch_size = int(config["train_batch_size"])
        self.cf_model = config["cf_model"]
        if self.cf_model not in CF_MODELS:
            raise ValueError(f"config `cf_model` must be one of {CF_MODELS}, got {self.cf_model!r}")
        if not 0.0 <= self.lambda_coeff <= 1.0:
            raise ValueError(f"config `lambda_coeff` must be in [0, 1], got {self.lambda_coeff!r}")

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.features = nn.ParameterDict({m: nn.Parameter(x.clone()) for m, x in self.modality_features.items()})
        self.projections = nn.ModuleDict({m: nn.Linear(x.size(1), self.feat_embed_dim)
                                          for m, x in self.modality_features.items()})
        self.modal_weight = nn.Parameter(torch.full((len(self.modalities),), 0.5))

        for m in self.modalities:  # N(K(X^m)), fixed
            adj = self.item_item_adjacency(self.modality_features[m], self.knn_k, weighted=True)
            self.register_sparse(f"original_{m}", normalize_adjacency(drop_nonpositive(adj), "row"))
        # D^{-1}(A + I) over the training bipartite graph.
        u, i = self.inter_index
        n = self.n_users + self.n_items
        loops = torch.arange(n)
        src = torch.cat([u, i + self.n_users, loops])
        dst = torch.cat([i + self.n_users, u, loops])
        self.register_sparse("norm_adj", normalize_adjacency(
            sparse_from_edges(torch.stack([src, dst]), torch.ones(src.numel()), n), "rw"))
        self._graph = None  # (index, value) of S for the batches of this epoch
        self._rebuild = True

    # -- graphs ---------------------------------------------------------------------------
    def learned_knn(self, m: str) -> Tuple[Tensor, Tensor]:
        r"""Entries of :math:`K(\mathbf{X}^m W_m + b_m)` (see :func:`learned_knn_graph`)."""
        return learned_knn_graph(self.projections[m](self.features[m]), self.knn_k)

    def item_graph(self) -> Tuple[Tensor, Tensor]:
        r"""Entries ``(index, value)`` of :math:`S = (1-\lambda)\hat{S} + \lambda\tilde{S}`
        (an index may repeat: repeated entries add up)."""
        originals = [(getattr(self, f"original_{m}_indices"), getattr(self, f"original_{m}_values"))
                     for m in self.modalities]
        return mix_graphs([self.learned_knn(m) for m in self.modalities], originals,
                          torch.softmax(self.modal_weight, dim=0), self.lambda_coeff, self.n_items)

    def pre_epoch_processing(self, epoch: int) -> None:
        """The first training batch of the epoch relearns the item graph."""
        self._rebuild = True

    # -- representations ------------------------------------------------------------------
    def forward(self, graph: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tensor]:
        h = self.item_id_embedding.weight
        for _ in range(self.n_layers):
            h = propagate(graph[0], graph[1], h)
        h = F.normalize(h, dim=1)
        if self.cf_model == "mf":
            return self.user_embedding.weight, self.item_id_embedding.weight + h
        ego = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight])
        z_u, z_i = torch.split(lightgcn_mean(self.sparse("norm_adj"), ego, self.n_ui_layers),
                               [self.n_users, self.n_items])
        return z_u, z_i + h

    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        return self.forward(self.item_graph())

    def calculate_loss(self, interaction):
        if self._rebuild or self._graph is None:
            graph = self.item_graph()
            self._graph = (graph[0], graph[1].detach())
            self._rebuild = False
        else:
            graph = self._graph
        user = interaction[self.USER_ID]
        pos = interaction[self.ITEM_ID]
        neg = interaction[self.NEG_ITEM_ID]
        e_u, e_i = self.forward(graph)
        u, p, n = e_u.index_select(0, user), e_i.index_select(0, pos), e_i.index_select(0, neg)
        reg = 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / self.batch_size
        return bpr(u, p, n) + self.reg_weight * reg
