r"""Users' and items' learned representations from a trained checkpoint, and their
alignment and uniformity (Wang & Isola, ICML 2020).

With :math:`\tilde f(x) = f(x) / \lVert f(x) \rVert_2`:

.. math::
    \mathrm{align} &= \mathbb{E}_{(u,i) \sim p_{pos}}\,
        \lVert \tilde f(u) - \tilde f(i) \rVert_2^2 \\
    \mathrm{uniform} &= \log \mathbb{E}_{x, y \sim p_{data},\, x \ne y}\,
        e^{-2 \lVert \tilde f(x) - \tilde f(y) \rVert_2^2}

Lower is better for both: positives close together, and the representations
spread over the sphere (the uniformity's minimum for :math:`n` points on the
sphere is about :math:`-4`). Uniformity is computed among users and among items
separately, as in DirectAU (Wang et al., KDD 2022), whose CF analysis this follows.

Which vectors are "the representation" (the vectors the model scores with,
:math:`\hat y_{ui} = f(u)^\top f(i)`), by rule:

1. :class:`~recbole_models.model.mllmrec.MLLMRec`: the two towers' outputs
   (``_all_outputs()``: user tower on the preference embedding, item tower on H);
2. our :class:`~recbole_models.model.multimodal.MultimodalRecommender` subclasses:
   ``all_embeddings()``;
3. RecBole models whose ``forward()`` takes no argument and returns
   ``(users [n_users, d], items [n_items, d])`` (LightGCN, NGCF, SGL, ...): that;
4. RecBole models with ``user_embedding`` / ``item_embedding`` tables (BPR, ...):
   the tables.

Anything else is refused with a message naming the model. Row 0 (RecBole's
``[PAD]``) is never a user or item and is left out.

Loading is :func:`recbole_models.checkpoint.load_model` (weights only, no ``eval``).
"""
from typing import Tuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["representations", "alignment", "uniformity", "positive_pairs"]

@torch.no_grad()
def representations(model) -> Tuple[Tensor, Tensor]:
    """``(users [n_users - 1, d], items [n_items - 1, d])`` by the rule of the module
    docstring (row ``j`` is RecBole's internal id ``j + 1``)."""
    from recbole_models.model.mllmrec import MLLMRec
    from recbole_models.model.multimodal import MultimodalRecommender

    model.eval()
    if isinstance(model, MLLMRec):
        users, items = model._all_outputs()
    elif isinstance(model, MultimodalRecommender):
        users, items = model.all_embeddings()
    else:
        out = None
        try:
            out = model.forward()
        except TypeError:
            pass
        if isinstance(out, tuple) and len(out) == 2 and all(isinstance(t, Tensor) for t in out) \
                and out[0].shape[0] == model.n_users and out[1].shape[0] == model.n_items:
            users, items = out
        elif hasattr(model, "user_embedding") and hasattr(model, "item_embedding"):
            users, items = model.user_embedding.weight, model.item_embedding.weight
        else:
            raise ValueError(f"{type(model).__name__}: no rule for its user representations (needs "
                             f"forward() -> (users, items) or user_embedding/item_embedding tables)")
    if users.shape[-1] != items.shape[-1]:
        raise ValueError(f"{type(model).__name__}: user and item vectors differ in size "
                         f"({users.shape[-1]} vs {items.shape[-1]})")
    return users[1:].detach().float(), items[1:].detach().float()


def positive_pairs(dataset) -> Tuple[Tensor, Tensor]:
    """``(user rows, item rows)`` of a RecBole dataset's interactions, in the 0-based rows
    of :func:`representations`."""
    inter = dataset.inter_feat
    return inter[dataset.uid_field].long() - 1, inter[dataset.iid_field].long() - 1


def alignment(users: Tensor, items: Tensor, pairs: Tuple[Tensor, Tensor]) -> float:
    r""":math:`\mathbb{E}\lVert \tilde f(u) - \tilde f(i) \rVert^2` over the positive ``pairs``."""
    u = F.normalize(users, dim=-1)[pairs[0]]
    i = F.normalize(items, dim=-1)[pairs[1]]
    return float((u - i).pow(2).sum(-1).mean())


def uniformity(x: Tensor, max_points: int = 5000, seed: int = 0) -> float:
    r""":math:`\log \mathbb{E}_{x \ne y} e^{-2\lVert \tilde f(x) - \tilde f(y) \rVert^2}` over all
    pairs of rows of ``x`` (of ``max_points`` rows drawn with ``seed`` when there are more)."""
    if x.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_points]]
    if x.shape[0] < 2:
        raise ValueError("uniformity needs at least two vectors")
    d2 = torch.pdist(F.normalize(x.double(), dim=-1)).pow(2)
    return float(torch.logsumexp(-2 * d2, 0) - np.log(d2.numel()))
