r"""What every multimodal baseline shares: its item modalities, the training
graph, item-item graphs built with our transforms, and a full-sort cache.

Modalities
----------
A dataset names its item modalities in its YAML, each the id field of one
``preload_weight`` entry (a feature file, ``docs/recbole.md``)::

    modalities:            # name -> id field of `preload_weight`
      image: image_id      # <dataset>.imageemb: image_id:token  image_emb:float_seq
      text: iid            # <dataset>.itememb:  iid:token       item_emb:float_seq

A model declares the modalities it can use in :attr:`MultimodalRecommender.MODALITIES`
(``None``: any name) and uses every one of them the dataset has, or the subset
named by the config key ``use_modalities``. It needs at least one: a dataset
without a usable modality is an error that names the missing key or file.

Item-item graphs and "+GR"
--------------------------
:meth:`MultimodalRecommender.item_item_adjacency` gives the model its
unnormalised item-item matrix :math:`A` for one modality's features, as a sparse
``[n_items, n_items]`` tensor whose row :math:`i` lists item :math:`i`'s
neighbours (row 0, RecBole's ``[PAD]``, is empty). Without refinement it is the
binary k-NN graph of the MMRec family (cosine top-``knn_k`` per item, the item
itself included). With ``graph_refinement: True`` it is MLLMRec's refined graph
instead (``ThresholdKNN(knn_k, knn_threshold)`` + ``JaccardCooccurrence(cooc_k)``
of the TRAINING interactions, summed), the paper's plug-in "+GR". The model then
normalises :math:`A` as its own paper says (:func:`normalize_adjacency`).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.utils import InputType
from torch import Tensor

from mllmrec_pyg.transforms import jaccard_cooccurrence_graph, normalize_graph, threshold_knn_graph
from recbole_models.features import feature_matrix
from recbole_models.model.eval_cache import WeightKeyedCache

__all__ = ["MultimodalRecommender", "bpr", "drop_nonpositive", "lightgcn_mean", "load_modalities", "normalize_adjacency",
           "sparse_from_edges"]


def load_modalities(config, dataset, n_items: int, model: str,
                    supported: Optional[Sequence[str]] = None) -> Dict[str, Tensor]:
    r"""``{name: [n_items, d] float32}`` of the modalities ``model`` uses.

    Args:
        config: RecBole config; reads ``modalities`` (dataset) and ``use_modalities``
            (model, optional).
        dataset: the training dataset (``get_preload_weight`` gives row ``i`` = item ``i``).
        n_items: RecBole's ``n_items`` (``[PAD]`` included).
        model: the model's name, for messages.
        supported: modality names the model can use (``None``: any).
    """
    declared = config["modalities"]
    if not declared:
        raise ValueError(
            f"{model} needs item modalities: the dataset config has no `modalities` key "
            f"(e.g. `modalities: {{text: iid, image: image_id}}`, each the id field of a "
            f"`preload_weight` feature file; see docs/recbole.md)")
    if not isinstance(declared, dict) or not all(isinstance(v, str) for v in declared.values()):
        raise ValueError(f"config `modalities` must map modality names to id fields of "
                         f"`preload_weight`, got {declared!r}")
    wanted = config["use_modalities"]
    if wanted is None:
        names = [n for n in declared if supported is None or n in supported]
    else:
        if isinstance(wanted, str) or not isinstance(wanted, (list, tuple)) or not wanted:
            raise ValueError(f"config `use_modalities` must be a non-empty list, got {wanted!r}")
        unknown = [n for n in wanted if n not in declared]
        if unknown:
            raise ValueError(f"config `use_modalities` names {unknown}, which the dataset's "
                             f"`modalities` ({sorted(declared)}) does not have")
        unsupported = [n for n in wanted if supported is not None and n not in supported]
        if unsupported:
            raise ValueError(f"{model} cannot use modalities {unsupported} (it uses {list(supported)})")
        names = list(wanted)
    if not names:
        raise ValueError(f"{model} uses the modalities {list(supported)}, the dataset's `modalities` "
                         f"has only {sorted(declared)}")
    features = {}
    for name in names:
        matrix = feature_matrix(dataset, declared[name], n_items, f"modality `{name}`")
        features[name] = torch.from_numpy(matrix)
    return features


def sparse_from_edges(edge_index: Tensor, edge_weight: Tensor, num_nodes: int,
                      offset: int = 0) -> Tensor:
    r"""The sparse matrix :math:`M` with :math:`M_{ij}` = weight of edge :math:`(j \to i)`.

    PyG edges run from source ``edge_index[0]`` to target ``edge_index[1]``; row ``i`` of
    the matrix aggregates over the sources pointing at ``i`` (``M @ X``). ``offset`` shifts
    both ids (``1`` skips RecBole's ``[PAD]`` row).
    """
    indices = torch.stack([edge_index[1], edge_index[0]]) + offset
    return torch.sparse_coo_tensor(indices, edge_weight, (num_nodes, num_nodes)).coalesce()


def normalize_adjacency(adj: Tensor, normalization: Optional[str] = "row") -> Tensor:
    r"""Normalises a sparse ``[N, N]`` matrix :math:`A` (see
    :func:`mllmrec_pyg.transforms.normalize_graph`): ``"row"`` is
    :math:`D^{-1/2} A D^{-1/2}` with :math:`D` the row sums (the MMRec family's
    ``compute_normalized_laplacian``), ``"rw"`` is :math:`D^{-1} A`, ``None`` is :math:`A`."""
    adj = adj.coalesce()
    row, col = adj.indices()
    ei, ew = normalize_graph(torch.stack([col, row]), adj.values(), adj.size(0), normalization)
    return sparse_from_edges(ei, ew, adj.size(0))


def drop_nonpositive(adj: Tensor) -> Tensor:
    r"""``adj`` without its entries :math:`\le 0`. A cosine k-NN neighbour of non-positive
    similarity (only where k approaches the number of items) can make a row sum
    negative, and :math:`D^{-1/2}` NaN."""
    adj = adj.coalesce()
    keep = adj.values() > 0
    return torch.sparse_coo_tensor(adj.indices()[:, keep], adj.values()[keep], adj.shape).coalesce()


def bpr(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    r"""BPR loss :math:`-\operatorname{mean}\log\sigma(u^\top i - u^\top j)` of ``[B, d]`` rows."""
    return -torch.nn.functional.logsigmoid((user * pos).sum(-1) - (user * neg).sum(-1)).mean()


def lightgcn_mean(adj: Tensor, ego: Tensor, n_layers: int) -> Tensor:
    r"""LightGCN's layer mean :math:`\frac{1}{L+1}\sum_{l=0}^{L} A^l X` over a sparse ``adj``."""
    layers = [ego]
    for _ in range(n_layers):
        ego = torch.sparse.mm(adj, ego)
        layers.append(ego)
    return torch.stack(layers).mean(0)


class MultimodalRecommender(GeneralRecommender):
    r"""Base of the multimodal baselines.

    Subclasses set :attr:`MODALITIES`, build their layers, and implement
    :meth:`calculate_loss` and :meth:`all_embeddings` (every user's and every item's
    final representation, scored by a dot product). ``full_sort_predict`` and
    ``predict`` come from here: ``full_sort_predict`` computes
    :meth:`all_embeddings` once per evaluation (a :class:`WeightKeyedCache`, so
    never from weights the model no longer has) and scores a batch of users against
    every item with one matrix product.

    Attributes:
        modality_features: ``{name: [n_items, d]}`` frozen input features (row 0 zero).
        inter_index: ``[2, nnz]`` (user, item) rows of the TRAINING split.

    Config keys read here: ``modalities``, ``use_modalities``,
    ``graph_refinement`` (bool, "+GR"), and with it ``knn_threshold`` and ``cooc_k``;
    ``knn_k`` is the k-NN size in both cases.
    """

    input_type = InputType.PAIRWISE
    #: Saved in checkpoints (RecBole's ``other_parameter``): a resumed run goes on counting epochs.
    other_parameter_name = ["epochs_started"]
    #: Modality names this model can use (``None``: any).
    MODALITIES: Optional[Tuple[str, ...]] = None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self._config = config
        self.modality_features = load_modalities(config, dataset, self.n_items, type(self).__name__,
                                                 self.MODALITIES)
        self.modalities: List[str] = list(self.modality_features)
        inter = dataset.inter_matrix(form="coo")  # the TRAINING split (train_data's dataset)
        self.inter_index = torch.from_numpy(np.vstack([inter.row, inter.col]).astype(np.int64))
        self.graph_refinement = config["graph_refinement"] or False
        if self.graph_refinement not in (True, False):
            raise ValueError(f"config `graph_refinement` must be True or False, got {self.graph_refinement!r}")
        self._eval_cache = WeightKeyedCache()
        self._sparse_shapes: Dict[str, Tuple[int, ...]] = {}
        #: Training epochs begun (see :meth:`train`).
        self.epochs_started = 0

    # -- graphs ---------------------------------------------------------------------------
    def item_item_adjacency(self, features: Tensor, k: Optional[int] = None,
                            weighted: bool = False) -> Tensor:
        r"""Unnormalised item-item matrix for one modality: k-NN (self included) with
        binary weights, or the cosine similarities with ``weighted=True`` (MMRec's
        ``build_knn_normalized_graph``); or MLLMRec's refined graph (always binary
        semantic edges plus Jaccard weights) when ``graph_refinement`` is on.
        Row 0 ([PAD]) is empty."""
        k = int(self.config_value("knn_k") if k is None else k)
        x = features[1:].detach()
        num = x.size(0)
        if not self.graph_refinement:
            ei, ew = threshold_knn_graph(x, min(k, num - 1), threshold=None, weighted=weighted)
            return sparse_from_edges(ei, ew, self.n_items, offset=1)
        threshold = self.config_value("knn_threshold")
        ei, ew = threshold_knn_graph(x, min(k, num - 1), threshold=threshold)
        adj = sparse_from_edges(ei, ew, self.n_items, offset=1)
        cooc_k = int(self.config_value("cooc_k"))
        if cooc_k > 0:
            keep = self.inter_index[1] > 0
            ui = torch.stack([self.inter_index[0, keep], self.inter_index[1, keep] - 1])
            ci, cw = jaccard_cooccurrence_graph(ui, self.n_users, num, min(cooc_k, num - 1))
            adj = (adj + sparse_from_edges(ci, cw, self.n_items, offset=1)).coalesce()
        return adj

    def user_item_adjacency(self) -> Tensor:
        r"""Symmetric-normalised bipartite TRAINING graph :math:`\hat{A}` over
        ``n_users + n_items`` nodes (users first), as in LightGCN."""
        u, i = self.inter_index
        n = self.n_users + self.n_items
        src = torch.cat([u, i + self.n_users])
        dst = torch.cat([i + self.n_users, u])
        adj = sparse_from_edges(torch.stack([src, dst]), torch.ones(src.numel()), n)
        return normalize_adjacency(adj, "row")

    def config_value(self, key: str):
        return self._config[key]

    def register_sparse(self, name: str, adj: Tensor) -> None:
        r"""Keeps the sparse matrix ``adj`` as the non-persistent dense buffers
        ``<name>_indices`` / ``<name>_values``, so that it follows ``.to(device)`` and
        keys the :class:`WeightKeyedCache` (a sparse tensor has no ``data_ptr``); it is
        derived from the data, hence not in the ``state_dict``. :meth:`sparse` rebuilds it."""
        adj = adj.coalesce()
        self.register_buffer(f"{name}_indices", adj.indices(), persistent=False)
        self.register_buffer(f"{name}_values", adj.values(), persistent=False)
        self._sparse_shapes[name] = tuple(adj.shape)

    def sparse(self, name: str) -> Tensor:
        """The matrix kept by :meth:`register_sparse` under ``name``, on the model's device."""
        return torch.sparse_coo_tensor(getattr(self, f"{name}_indices"), getattr(self, f"{name}_values"),
                                       self._sparse_shapes[name], is_coalesced=True)

    # -- epochs ---------------------------------------------------------------------------
    def train(self, mode: bool = True):
        r"""RecBole's ``Trainer._train_epoch`` calls ``model.train()`` exactly once at the start
        of every training epoch (and ``fit`` nothing else per epoch): each such call runs
        :meth:`pre_epoch_processing` with the number of epochs begun before it. ``eval()``
        (``train(False)``) does not count. The count is saved in checkpoints
        (:attr:`other_parameter_name`): a run resumed after epoch :math:`e` goes on at :math:`e+1`."""
        super().train(mode)
        if mode:
            self.pre_epoch_processing(self.epochs_started)
            self.epochs_started += 1
        return self

    def pre_epoch_processing(self, epoch: int) -> None:
        """Per-epoch work of the model (MMRec's hook of that name); nothing by default."""

    def epoch_generator(self, epoch: int, device=None) -> torch.Generator:
        r"""A random generator for epoch ``epoch``, seeded from RecBole's ``seed`` and ``epoch``
        only: per-epoch sampling is then the same in every run with that seed, whatever
        else drew from the global generator before it."""
        seed = self._config["seed"]
        seed = 0 if seed is None else int(seed)
        state = np.random.SeedSequence([seed, int(epoch)]).generate_state(2, dtype=np.uint32)
        generator = torch.Generator(device=device if device is not None else "cpu")
        generator.manual_seed(int(state[0]) << 32 | int(state[1]))
        return generator

    # -- scoring --------------------------------------------------------------------------
    def all_embeddings(self) -> Tuple[Tensor, Tensor]:
        """``([n_users, d], [n_items, d])`` final representations."""
        raise NotImplementedError

    def predict(self, interaction):
        users, items = self._eval_cache.get(self, self.all_embeddings)
        u = users.index_select(0, interaction[self.USER_ID])
        i = items.index_select(0, interaction[self.ITEM_ID])
        return (u * i).sum(-1)

    def full_sort_predict(self, interaction):
        users, items = self._eval_cache.get(self, self.all_embeddings)
        return (users.index_select(0, interaction[self.USER_ID]) @ items.t()).view(-1)
