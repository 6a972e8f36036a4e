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

Loading: :func:`load_checkpoint` is a minimal loader written for the figures (the
shared loader of ``recbole_models.checkpoint`` was not on main yet); it can be
swapped for that one (its ``model``, ``config`` and split datasets are all the
figures use).
"""
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["load_checkpoint", "representations", "alignment", "uniformity", "positive_pairs"]

# Stored config keys that RecBole derives itself (given back they would be wrong) or
# that describe the machine of the training run, not the model.
_DERIVED = frozenset({
    "model", "dataset", "data_path", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_metric_bigger",
    "valid_neg_sample_args", "test_neg_sample_args", "device", "single_spec", "local_rank", "nproc",
    "world_size", "ip", "port", "offset", "gpu_id", "checkpoint_dir", "use_gpu",
})


def load_checkpoint(path: str, config_files: Optional[Sequence[str]] = None):
    """The model of a checkpoint written by :mod:`recbole_models.run`, in eval mode, on
    the CPU; returns ``(model, config, splits)`` with ``splits`` the RecBole datasets
    ``{"train", "valid", "test"}`` of the training run (the model is built on "train").

    The checkpoint is read with ``torch.load(weights_only=True)``. Its stored config
    gives the model and dataset names and every non-string value (hyper-parameters,
    lists, mappings); stored STRINGS are dropped, never handed to RecBole's ``Config``
    (which would ``eval`` them): string settings (``data_path``, field names) come from
    ``config_files`` (the dataset's YAML) and the model's default YAML.

    Args:
        path: the ``.pth`` checkpoint.
        config_files: the dataset YAML(s) the model was trained with.
    """
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_models import get_model
    from recbole_models.features import create_dataset
    from recbole_models.run import make_config
    from recbole_models.sweep import no_command_line

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "state_dict" not in state:
        raise ValueError(f"{path}: not a checkpoint of recbole_models.run (no `config` / `state_dict`)")
    stored = state["config"]
    name, dataset_name = stored.get("model"), stored.get("dataset")
    if not isinstance(name, str) or not isinstance(dataset_name, str):
        raise ValueError(f"{path}: the stored config names no model/dataset")
    typed = {k: v for k, v in stored.items() if k not in _DERIVED and not isinstance(v, str)}
    with no_command_line():
        config = make_config(name, dataset_name, list(config_files or []) or None,
                             dict(typed, use_gpu=False, gpu_id=""))
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = get_model(name)(config, train._dataset)
    model.load_state_dict(state["state_dict"])
    if state.get("other_parameter"):
        model.load_other_parameter(state["other_parameter"])
    model.eval()
    return model, config, {"train": train._dataset, "valid": valid._dataset, "test": test._dataset}


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
