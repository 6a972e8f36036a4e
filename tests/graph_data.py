"""Synthetic item features and interactions shared by the graph tests."""
import torch


def clustered_features(num_items: int, dim: int = 32, clusters: int = 12, seed: int = 0):
    """Features around a few centres, so thresholds 0.4-0.7 keep some edges and drop others."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=gen) * 2.0
    labels = torch.randint(0, clusters, (num_items,), generator=gen)
    return centres[labels] + torch.randn(num_items, dim, generator=gen)


def sparse_interactions(num_users: int, num_items: int, per_user: int = 2, seed: int = 0):
    """Each user picks ``per_user`` distinct items, popularity ~ 1/rank (long tail)."""
    gen = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, num_items + 1, dtype=torch.float)
    items = torch.stack([torch.multinomial(weights, per_user, replacement=False, generator=gen)
                         for _ in range(num_users)])
    users = torch.arange(num_users).repeat_interleave(per_user)
    return torch.stack([users, items.reshape(-1)])


def nested_prime_interactions(num_items: int):
    """Item ``i``'s audience is users ``[0, p_i)`` with ``p_i`` the i-th prime (in shuffled order).

    Then ``J_ij = min(p_i, p_j) / max(p_i, p_j)``: no two values of a row are equal
    (unique factorisation) and none is 1, so a top-k over Jaccard has no ties and
    the reference's arbitrary tie choice cannot differ from ours. Returns
    ``(inter_index, num_users)``.
    """
    primes, candidate = [], 2
    while len(primes) < num_items:
        if all(candidate % p for p in primes if p * p <= candidate):
            primes.append(candidate)
        candidate += 1
    sizes = torch.tensor(primes)[torch.randperm(num_items, generator=torch.Generator().manual_seed(0))]
    users = torch.cat([torch.arange(int(s)) for s in sizes])
    items = torch.arange(num_items).repeat_interleave(sizes)
    return torch.stack([users, items]), int(sizes.max())
