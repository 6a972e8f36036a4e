"""What the reference's `== 1` zeroing really removes from the co-occurrence graph,
measured on the committed ml-100k training split (the figures quoted in docs/graph.md)."""
import os

import pytest
import torch

from mllmrec_pyg.testing.reference import reference_jaccard_adjacency
from mllmrec_pyg.text.item_text import read_atomic
from mllmrec_pyg.transforms import jaccard_cooccurrence_graph

TRAIN = os.path.join(os.path.dirname(__file__), "..", "data", "ml-100k", "ml-100k.train.inter")


@pytest.fixture(scope="module")
def ml100k():
    inter = read_atomic(TRAIN)
    users = {u: i for i, u in enumerate(dict.fromkeys(inter["user_id"]))}
    items = {t: i for i, t in enumerate(dict.fromkeys(inter["item_id"]))}
    ui = torch.tensor([[users[u] for u in inter["user_id"]], [items[i] for i in inter["item_id"]]])
    return ui, len(users), len(items)


def test_reference_zeroing_on_ml100k(ml100k):
    ui, num_users, num_items = ml100k
    assert (num_users, num_items, ui.size(1)) == (943, 1647, 80808)
    ref = reference_jaccard_adjacency(ui, num_users, num_items, 10)
    audience = torch.bincount(ui[1], minlength=num_items)
    r = torch.zeros(num_items, num_users)
    r[ui[1], ui[0]] = 1.0
    shared = r @ r.t()
    identical = (shared == audience.view(-1, 1)) & (shared == audience.view(1, -1))
    identical.fill_diagonal_(False)
    single = audience == 1
    # n / (n + 1e-7) is 1.0 in float32 only for n >= 2: single-user items keep J_ii.
    one_minus = torch.tensor(1.0) / (torch.tensor(1.0) + 1e-7)
    assert float(one_minus) == pytest.approx(0.99999988, abs=1e-8) and float(one_minus) != 1.0
    assert int(single.sum()) == 140
    diagonal = ref.diagonal()
    assert torch.equal(diagonal != 0, single & (diagonal != 0))  # only single-user items
    assert int((diagonal != 0).sum()) == 116  # the other 24 lose the place to ties
    assert (diagonal[diagonal != 0] == one_minus).all()
    # Distinct items with the same audience: zeroed for 2-3 users, kept for 1.
    pair_audience = audience.view(-1, 1).expand(-1, num_items)[identical]
    assert int((pair_audience >= 2).sum()) == 24  # 12 unordered pairs
    assert set(pair_audience[pair_audience >= 2].tolist()) == {2, 3}
    assert int((pair_audience == 1).sum()) == 2 * 540
    assert not (ref[identical & (audience.view(-1, 1) >= 2)] != 0).any()
    # Ours: exactly the diagonal removed, identical audiences of 2-3 users are J = 1.
    ei, ew = jaccard_cooccurrence_graph(ui, num_users, num_items, 10)
    assert not (ei[0] == ei[1]).any()
    kept_pairs = identical[ei[1], ei[0]] & (audience[ei[1]] >= 2)
    assert kept_pairs.any() and (ew[kept_pairs] == 1.0).all()
