r"""t-SNE of users' learned representations from several trained checkpoints, with
alignment and uniformity printed (paper RQ5: "more uniform" as a number).

The same users (``n_users`` drawn by token with ``seed`` from the first checkpoint's
dataset, so every panel shows the same people) are embedded per checkpoint:
their L2-normalised representations (:func:`~recbole_models.figures.representations.representations`)
go through ``sklearn.manifold.TSNE`` (2-d, PCA init, ``random_state=seed``). Points are
coloured by the user's number of training interactions (log scale). Every model
is summarised by

- ``align``: alignment over the positive pairs of the ``pairs`` split (default test),
- ``uniform_users`` / ``uniform_items``: uniformity among all users / all items,

computed on ALL users and items, not only the plotted ones (t-SNE distorts
distances; these numbers do not).
"""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from recbole_models.checkpoint import load_model
from recbole_models.figures.representations import (alignment, positive_pairs,
                                                    representations, uniformity)

__all__ = ["tsne_figure"]


def tsne_figure(checkpoints: Sequence[str], out: str, config_files: Optional[Sequence[str]] = None,
                labels: Optional[Sequence[str]] = None, n_users: int = 500, seed: int = 0,
                pairs: str = "test", perplexity: float = 30.0) -> List[Dict]:
    """Writes the PNG ``out`` (one panel per checkpoint); returns one dict per checkpoint
    with ``label``, ``model``, ``align``, ``uniform_users``, ``uniform_items``, ``users``.

    Args:
        checkpoints: ``.pth`` files of :mod:`recbole_models.run` runs on the same dataset.
        out: the PNG path.
        config_files: the dataset YAML(s) the models were trained with.
        labels: panel titles (default: the stored model names).
        n_users: users plotted (all when fewer).
        seed: draws the users and seeds t-SNE.
        pairs: the split whose interactions are the positives of ``align``
            (``train``, ``valid`` or ``test``).
        perplexity: t-SNE perplexity (lowered to ``(n - 1) / 3`` for few users).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    if not checkpoints:
        raise ValueError("give at least one checkpoint")
    if labels is not None and len(labels) != len(checkpoints):
        raise ValueError(f"{len(labels)} labels for {len(checkpoints)} checkpoints")
    if pairs not in ("train", "valid", "test"):
        raise ValueError(f"pairs must be train, valid or test, got {pairs!r}")
    results, points, chosen, counts = [], [], None, None
    for k, path in enumerate(checkpoints):
        loaded = load_model(path, config_files=config_files, device="cpu")
        model, config, splits = loaded.model, loaded.config, loaded.splits
        users, items = representations(model)
        train = splits["train"]
        uid = train.uid_field
        tokens = list(train.field2id_token[uid][1:])
        if chosen is None:
            rng = np.random.default_rng(seed)
            chosen = sorted(rng.choice(len(tokens), size=min(n_users, len(tokens)), replace=False).tolist())
            chosen_tokens = [tokens[j] for j in chosen]
            n_train = np.bincount(train.inter_feat[uid].numpy(), minlength=len(tokens) + 1)[1:]
            counts = n_train[chosen]
            dataset_name = config["dataset"]
        elif config["dataset"] != dataset_name:
            raise ValueError(f"{path}: dataset {config['dataset']!r}, the first checkpoint's is {dataset_name!r}")
        rows = []
        for t in chosen_tokens:
            if t not in train.field2token_id[uid]:
                raise ValueError(f"{path}: user {t!r} of the first checkpoint is not in this model's dataset")
            rows.append(train.field2token_id[uid][t] - 1)
        results.append({
            "label": labels[k] if labels else config["model"], "model": config["model"], "checkpoint": path,
            "align": alignment(users, items, positive_pairs(splits[pairs])),
            "uniform_users": uniformity(users, seed=seed), "uniform_items": uniformity(items, seed=seed),
            "users": len(rows)})
        points.append(F.normalize(users[torch.tensor(rows)], dim=-1).numpy())

    n = len(chosen)
    perp = min(perplexity, max(2.0, (n - 1) / 3))
    fig, axes = plt.subplots(1, len(points), figsize=(4.6 * len(points), 4.6), squeeze=False)
    colour = np.log10(np.maximum(counts, 1))
    for ax, res, x in zip(axes[0], results, points):
        xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perp).fit_transform(x)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="viridis", s=8)
        ax.set_title(f"{res['label']}\nalign {res['align']:.3f}, uniform (users) {res['uniform_users']:.3f}",
                     fontsize=9)
        ax.set_xlabel("t-SNE 1 (no unit)")
        ax.set_ylabel("t-SNE 2 (no unit)")
        ax.set_xticks([])
        ax.set_yticks([])
    cbar = fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.85)
    cbar.set_label("log10 training interactions of the user")
    fig.suptitle(f"{dataset_name}: t-SNE of {n} users' normalised representations "
                 f"(lower align / uniform is better; align on {pairs} pairs)", fontsize=10, y=1.04)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return results
