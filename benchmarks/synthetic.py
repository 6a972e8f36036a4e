"""Synthetic Amazon-Baby-size data for the benchmarks (MMRec's Baby: 19,445 users, 7,050
items, 160,792 interactions): long-tail item popularity, Pareto user activity, at least 5
interactions per user, a per-user 8:1:1 split, and clustered item features (50 centres)."""
import os

import numpy as np

from recbole_models.features import write_feature_file

BABY = {"n_users": 19445, "n_items": 7050, "n_inter": 160792}


def write_long_tail_interactions(directory, name, rng, n_users, n_items, n_inter, shuffle):
    """Writes ``<name>.{train,valid,test}.inter`` and returns ``(rows, seen item ids)``.

    ``shuffle`` reorders each user's sampled items before the split (the draws of
    ``benchmarks/train_epoch.py``; ``benchmarks/models.py`` splits them as drawn): each
    benchmark keeps the data its published figures were measured on."""
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop /= pop.sum()
    activity = rng.pareto(2.0, n_users) + 1e-3
    per_user = 5 + rng.multinomial(n_inter - 5 * n_users, activity / activity.sum())
    rows = []
    for u, m in enumerate(per_user):
        m = min(int(m), n_items)
        items = rng.choice(n_items, size=m, replace=False, p=pop)
        if shuffle:
            rng.shuffle(items)
        n_test = max(1, int(round(m * 0.1)))
        for pos, i in enumerate(items):
            rows.append(("test" if pos < n_test else ("valid" if pos < 2 * n_test else "train"), u, i))
    for split in ("train", "valid", "test"):
        with open(os.path.join(directory, f"{name}.{split}.inter"), "w") as f:
            f.write("user_id:token\titem_id:token\n")
            f.writelines(f"{u}\t{i}\n" for s, u, i in rows if s == split)
    return rows, sorted({i for _, _, i in rows})


def clustered_features(rng, n_items, dim):
    """``[n_items, dim]``: 50 Gaussian centres plus noise (items of a centre are similar)."""
    centers = rng.normal(size=(50, dim))
    return centers[rng.integers(0, 50, n_items)] + 0.8 * rng.normal(size=(n_items, dim))


def write_user_features(path, rng, n_users, dim=384, fmt=None):
    kwargs = {"fmt": fmt} if fmt else {}
    write_feature_file(path, "uid", "user_emb", list(range(n_users)), rng.normal(size=(n_users, dim)), **kwargs)
