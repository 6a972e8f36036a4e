"""Per-user train/valid/test splits as label arrays (0 train, 1 valid, 2 test; MMRec's
``x_label``), one label per interaction row.

- :func:`mmrec_split`: MMRec's ``1splitting`` rule (NOTES §3). Each user's rows are
  shuffled; a user with ``n < 10`` rows gets ``(n-2, 1, 1)``, others
  ``m = int(0.2 n)`` held out, ``m // 2`` valid and ``m - m // 2`` test.
- :func:`ratio_split`: RecBole's per-user ratio split (``eval_args.split: {RS: ...}``,
  ``group_by: user``) in random (``RO``) or time (``TO``) order, with the per-user
  counts from RecBole's own ``Dataset._calcu_split_ids``.

Both are deterministic given ``seed`` (NumPy ``default_rng``). The shuffles are ours,
so the exact rows differ from a run of MMRec's notebook or of RecBole (whose shuffles
depend on their own global random state); the counts per user are the same.
"""
from typing import Sequence

import numpy as np

__all__ = ["mmrec_split", "ratio_split", "mmrec_counts"]


def _check_users(users) -> np.ndarray:
    users = np.asarray(users)
    if users.ndim != 1:
        raise ValueError(f"users must be a 1-d array of user ids, got shape {users.shape}")
    return users


def _positions(users: np.ndarray, order: np.ndarray):
    """For rows visited in ``order``: each row's position within its user and its user's
    row count (both indexed by row)."""
    _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    # Stable sort by user keeps the given order within each user.
    by_user = order[np.argsort(inverse[order], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.empty(len(users), dtype=np.int64)
    pos[by_user] = np.arange(len(users)) - np.repeat(starts, counts)
    return pos, counts[inverse]


def mmrec_counts(n: np.ndarray):
    """MMRec's ``(train, valid, test)`` counts for users with ``n`` interactions."""
    n = np.asarray(n, dtype=np.int64)
    held = np.where(n < 10, 2, (n * 0.2).astype(np.int64))
    valid = np.where(n < 10, 1, held // 2)
    test = held - valid
    return n - held, valid, test


def mmrec_split(users: Sequence, seed: int = 2024) -> np.ndarray:
    """MMRec's per-user split; returns int8 labels (0/1/2) aligned with ``users``.

    Args:
        users: the user id of each interaction row (any hashable dtype).
        seed: seed of the per-user shuffle.

    Raises:
        ValueError: a user has fewer than 3 interactions (MMRec's rule would leave them
            no training row; filter with a k-core of at least 3).
    """
    users = _check_users(users)
    if users.size == 0:
        raise ValueError("mmrec_split: no interactions to split")
    uniq, counts = np.unique(users, return_counts=True)
    if counts.min() < 3:
        few = uniq[counts < 3]
        raise ValueError(f"mmrec_split: {few.size} user(s) have fewer than 3 interactions "
                         f"(e.g. {few[0]!r}); MMRec's split gives each user one valid and one "
                         f"test row, so use a k-core of at least 3")
    rng = np.random.default_rng(seed)
    pos, n = _positions(users, rng.permutation(len(users)))
    train, valid, _ = mmrec_counts(n)
    return np.where(pos < train, 0, np.where(pos < train + valid, 1, 2)).astype(np.int8)


def _recbole_counts(tot: int, ratios: Sequence[float]):
    """RecBole 1.2.1's per-group counts (``Dataset._calcu_split_ids`` does not use its
    ``self``), so the sizes match a RecBole ``RS`` split exactly."""
    from recbole.data.dataset import Dataset

    ids = Dataset._calcu_split_ids(None, tot=int(tot), ratios=list(ratios))
    bounds = [0] + [int(i) for i in ids] + [int(tot)]
    return [bounds[i + 1] - bounds[i] for i in range(len(ratios))]


def ratio_split(users: Sequence, timestamps: Sequence = None, ratios: Sequence[float] = (0.8, 0.1, 0.1),
                order: str = "RO", seed: int = 2024) -> np.ndarray:
    """RecBole-style per-user ratio split; returns int8 labels (0/1/2) aligned with ``users``.

    Args:
        users: the user id of each interaction row.
        timestamps: time of each row (needed for ``order="TO"``; ties keep row order).
        ratios: three non-negative train/valid/test ratios (normalised to sum 1).
        order: ``"RO"`` shuffles each user's rows with ``seed``; ``"TO"`` sorts them by time,
            so valid and test are each user's latest rows.
        seed: seed of the ``"RO"`` shuffle.
    """
    users = _check_users(users)
    ratios = [float(r) for r in ratios]
    if len(ratios) != 3 or any(not np.isfinite(r) or r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers, got {ratios}")
    total = sum(ratios)
    ratios = [r / total for r in ratios]
    if order == "RO":
        visit = np.random.default_rng(seed).permutation(len(users))
    elif order == "TO":
        if timestamps is None:
            raise ValueError("order 'TO' needs timestamps")
        visit = np.argsort(np.asarray(timestamps), kind="stable")
    else:
        raise ValueError(f"order must be 'RO' or 'TO', got {order!r}")
    pos, n = _positions(users, visit)
    labels = np.empty(len(users), dtype=np.int8)
    sizes = np.unique(n)
    table = np.zeros((int(sizes.max()) + 1 if sizes.size else 1, 3), dtype=np.int64)
    for size in sizes:
        table[size] = np.cumsum(_recbole_counts(size, ratios))
    ends = table[n]
    labels[:] = np.where(pos < ends[:, 0], 0, np.where(pos < ends[:, 1], 1, 2))
    return labels
