import pytest
import torch
from torch_geometric.data import Data, HeteroData
from torch_geometric.transforms import Compose
from torch_geometric.utils import to_dense_adj

from graph_data import clustered_features, nested_prime_interactions, sparse_interactions
from mllmrec_pyg.nn import LightGCNPropagation
from mllmrec_pyg.testing.reference import (
    reference_item_graph,
    reference_jaccard_adjacency,
    reference_propagate,
    reference_semantic_adjacency,
)
from mllmrec_pyg.transforms import (
    JaccardCooccurrence,
    ThresholdKNN,
    Union,
    jaccard_cooccurrence_graph,
    threshold_knn_graph,
)
from mllmrec_pyg.transforms._topk import dense_topk, sparse_topk
from mllmrec_pyg.transforms.jaccard_cooccurrence import (
    _cooccurrence_counts_scipy,
    _cooccurrence_counts_torch,
)


def matrix(edge_index, edge_weight, n):
    """Dense A with A[i, j] = weight of edge (j -> i)."""
    return to_dense_adj(edge_index, edge_attr=edge_weight, max_num_nodes=n)[0].t()


def exact_jaccard(inter_index, num_users, num_items):
    """|U_i & U_j| / |U_i | U_j| in float64, diagonal zero."""
    r = torch.zeros(num_items, num_users, dtype=torch.float64)
    r[inter_index[1], inter_index[0]] = 1.0
    shared = r @ r.t()
    size = r.sum(1, keepdim=True)
    union = size + size.t() - shared
    j = torch.where(union > 0, shared / union.clamp(min=1), torch.zeros_like(shared))
    return j.fill_diagonal_(0.0)


def assert_no_boundary_ties(scores, k):
    """The reference's torch.topk picks arbitrarily among ties: compare only tie-free data."""
    top = scores.topk(k + 1, dim=1).values
    clash = (top[:, k - 1] == top[:, k]) & (top[:, k - 1] > 0)
    assert not clash.any(), "test data has ties at the k-th place; pick other data"


@pytest.fixture
def problem():
    n = 300
    x = clustered_features(n)
    ui, u = nested_prime_interactions(n)
    return x, ui, u


def run_contract(x, ui, u):
    g = Compose([ThresholdKNN(k=10, threshold=0.7), JaccardCooccurrence(k=10), Union()])(
        Data(x=x, inter_index=ui, num_users=u))
    return LightGCNPropagation(num_layers=1)(g.x, g.edge_index, g.edge_weight)


def test_acceptance_contract_equals_reference(problem):
    x, ui, u = problem
    n = x.size(0)
    jaccard = exact_jaccard(ui, u, n)
    assert_no_boundary_ties(jaccard, 10)
    assert not (jaccard == 1.0).any(), "reference zeroes J == 1 pairs; avoid them here"
    h = run_contract(x, ui, u)
    expected = reference_propagate(reference_item_graph(x, ui, u, 10, 0.7, 10), x, 1)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, expected, atol=1e-5, rtol=0)
    # The threshold really removed something and the co-occurrence graph really added something.
    assert reference_semantic_adjacency(x, 10, 0.7).sum() < 10 * n
    assert (reference_jaccard_adjacency(ui, u, n, 10) > 0).sum() > n


@pytest.mark.cuda
def test_acceptance_contract_cuda_equals_cpu(problem):
    x, ui, u = problem
    h_cpu = run_contract(x, ui, u)
    h_gpu = run_contract(x.cuda(), ui.cuda(), u)
    assert h_gpu.is_cuda
    torch.testing.assert_close(h_gpu.cpu(), h_cpu, atol=1e-5, rtol=0)


@pytest.mark.cuda
def test_graphs_identical_on_cuda_under_ties():
    x = torch.randn(50, 8).repeat(4, 1)  # every item has 3 exact duplicates
    cpu = threshold_knn_graph(x, 3, None)
    gpu = threshold_knn_graph(x.cuda(), 3, None)
    assert torch.equal(cpu[0], gpu[0].cpu())
    ui = sparse_interactions(400, 200, per_user=3)
    cpu = jaccard_cooccurrence_graph(ui, 400, 200, 4)
    gpu = jaccard_cooccurrence_graph(ui.cuda(), 400, 200, 4)
    assert torch.equal(cpu[0], gpu[0].cpu())
    torch.testing.assert_close(cpu[1], gpu[1].cpu())


@pytest.mark.parametrize("threshold", [0.4, 0.7, None])
@pytest.mark.parametrize("block_size", [1, 7, None])
def test_threshold_knn_matches_reference(threshold, block_size):
    x = clustered_features(120)
    edge_index, edge_weight = threshold_knn_graph(x, 10, threshold, block_size=block_size)
    expected = reference_semantic_adjacency(x, 10, threshold)
    assert torch.equal(matrix(edge_index, edge_weight, 120), expected)
    # Every item lists itself: the self-loop of the reference.
    self_loops = edge_index[0] == edge_index[1]
    assert self_loops.sum() == 120


def test_threshold_knn_options():
    x = clustered_features(80)
    n = 80
    ei, ew = threshold_knn_graph(x, 5, None, weighted=True, loop=False)
    assert not (ei[0] == ei[1]).any()
    assert torch.equal(torch.bincount(ei[1], minlength=n), torch.full((n,), 5))
    cos = torch.nn.functional.cosine_similarity(x[ei[0]], x[ei[1]])
    torch.testing.assert_close(ew, cos)
    ei, ew = threshold_knn_graph(x, 5, 0.5, weighted=True, force_undirected=True)
    a = matrix(ei, ew, n)
    assert torch.equal(a, a.t())
    assert (ew >= 0.5).all()


def test_threshold_knn_ties_pick_lowest_index():
    # Scaled one-hot rows: cosine similarities are exactly 1 or 0 whatever the BLAS
    # kernel, so the ties below are real ties (random duplicates can differ by an ulp
    # between block shapes, which is rounding, not a tie).
    base = torch.eye(10) * torch.tensor([2.0, 4.0, 0.5, 8.0, 1.0, 16.0, 0.25, 2.0, 4.0, 1.0]).view(-1, 1)
    x = torch.cat([base, 2 * base, base])  # item i, i + 10 and i + 20 are parallel
    ei, _ = threshold_knn_graph(x, 2, None)
    a = matrix(ei, None, 30)
    for i in range(30):
        # Three candidates tie at similarity 1: item i keeps its own place, and of the
        # other two the lower index wins, whatever the block.
        lowest_other = i % 10 if i >= 10 else i + 10
        assert a[i].nonzero().view(-1).tolist() == sorted([i, lowest_other])
    for bs in (1, 4, 30):
        assert torch.equal(threshold_knn_graph(x, 2, None, block_size=bs)[0], ei)


def test_dense_and_sparse_topk_tie_rule():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]])
    values, cols = dense_topk(scores, 2)
    assert sorted(cols[0].tolist()) == [0, 1]
    assert sorted(cols[1].tolist()) == [0, 1]
    row = torch.tensor([0, 0, 0, 0, 1, 1])
    col = torch.tensor([4, 3, 2, 1, 9, 8])
    val = torch.tensor([0.5, 0.5, 0.5, 0.9, 0.2, 0.2])
    keep = sparse_topk(row, col, val, 2)
    assert keep.tolist() == [False, False, True, True, True, True]


def test_jaccard_matches_exact_sets():
    ui = sparse_interactions(300, 60, per_user=3, seed=1)
    ui = torch.cat([ui, ui[:, :50]], dim=1)  # duplicated rows count once
    ei, ew = jaccard_cooccurrence_graph(ui, 300, 60, 5)
    a = matrix(ei, ew, 60).double()
    exact = exact_jaccard(ui, 300, 60)
    assert (a.diagonal() == 0).all()
    assert (torch.bincount(ei[1], minlength=60) <= 5).all()
    assert (ew > 0).all()
    kept = a > 0
    torch.testing.assert_close(a[kept], exact[kept], rtol=1e-6, atol=0)
    # Each kept value is at least as large as any dropped value of its row.
    for i in range(60):
        if kept[i].any():
            assert a[i][kept[i]].min() >= exact[i][~kept[i]].max() - 1e-7


def test_jaccard_scipy_and_torch_paths_agree():
    ui = sparse_interactions(200, 50, per_user=4, seed=2)
    pairs = torch.unique(ui[0] * 50 + ui[1])
    user, item = pairs // 50, pairs % 50
    a = _cooccurrence_counts_scipy(user, item, 200, 50)
    b = _cooccurrence_counts_torch(user, item, 200, 50)
    da = torch.sparse_coo_tensor(torch.stack(a[:2]), a[2].float(), (50, 50)).to_dense()
    db = torch.sparse_coo_tensor(torch.stack(b[:2]), b[2].float(), (50, 50)).to_dense()
    assert torch.equal(da, db)


def test_jaccard_on_heterodata_equals_data():
    ui = sparse_interactions(200, 40, per_user=3, seed=3)
    hetero = HeteroData()
    hetero["user"].num_nodes = 200
    hetero["item"].num_nodes = 40
    hetero["user", "rates", "item"].edge_index = ui
    out = JaccardCooccurrence(k=4)(hetero)
    assert ("item", "cooc", "item") in out.edge_types
    plain = JaccardCooccurrence(k=4)(Data(inter_index=ui, num_users=200, num_items=40))
    assert torch.equal(out["item", "cooc", "item"].edge_index, plain.edge_index)
    assert torch.equal(out["item", "cooc", "item"].edge_weight, plain.edge_weight)


def test_hetero_pipeline_equals_homogeneous(problem):
    x, ui, u = problem
    hetero = HeteroData()
    hetero["user"].num_nodes = u
    hetero["item"].x = x
    hetero["user", "rates", "item"].edge_index = ui
    out = Compose([ThresholdKNN(k=10, threshold=0.7), JaccardCooccurrence(k=10), Union()])(hetero)
    g = out["item", "refined", "item"]
    h = LightGCNPropagation(1)(x, g.edge_index, g.edge_weight)
    torch.testing.assert_close(h, run_contract(x, ui, u), atol=1e-6, rtol=0)


def test_union_sums_and_normalisations():
    x = clustered_features(60)
    ui = sparse_interactions(400, 60, per_user=3)
    data = Compose([ThresholdKNN(k=5, threshold=0.4), JaccardCooccurrence(k=5)])(
        Data(x=x, inter_index=ui, num_users=400))
    a = matrix(**data.item_graphs["knn"], n=60) + matrix(**data.item_graphs["cooc"], n=60)
    d = a.sum(1)
    for norm, expected in [
        ("row", a * d.pow(-0.5).view(-1, 1) * d.pow(-0.5).view(1, -1)),
        ("rw", a / d.view(-1, 1)),
        (None, a),
    ]:
        out = Union(normalization=norm)(data.clone())
        torch.testing.assert_close(matrix(out.edge_index, out.edge_weight, 60), expected)
        torch.testing.assert_close(matrix(**out.item_graphs["refined"], n=60), a)


def test_union_without_cooccurrence_is_w_o_te_and_isolated_items_keep_features():
    x = clustered_features(40)
    g = Compose([ThresholdKNN(k=3, threshold=0.7, loop=False), Union()])(Data(x=x))
    h = LightGCNPropagation(1)(x, g.edge_index, g.edge_weight)
    isolated = torch.bincount(g.edge_index[1], minlength=40) == 0
    assert isolated.any()
    torch.testing.assert_close(h[isolated], x[isolated])
    expected = reference_propagate(
        matrix(g.edge_index, g.edge_weight, 40), x, 1)
    torch.testing.assert_close(h, expected)


def test_each_builder_alone_leaves_a_graph():
    x = clustered_features(30)
    g = ThresholdKNN(k=4, threshold=None)(Data(x=x))
    assert g.edge_index.shape == (2, 120) and g.edge_weight.shape == (120,)
    ui = sparse_interactions(100, 30)
    g = JaccardCooccurrence(k=3)(Data(x=x, inter_index=ui, num_users=100))
    assert g.edge_index.size(1) == g.edge_weight.numel() > 0
    out = LightGCNPropagation(1, normalize=True)(x, g.edge_index, g.edge_weight)
    assert torch.isfinite(out).all()


def test_repr():
    assert repr(ThresholdKNN(k=10, threshold=0.7)) == (
        "ThresholdKNN(k=10, threshold=0.7, weighted=False, loop=True, force_undirected=False, "
        "block_size=None, key='knn', node_type='item', attr='x')")
    assert repr(ThresholdKNN(k=3, key="img", node_type="product", attr="image_x")).endswith(
        "key='img', node_type='product', attr='image_x')")
    assert repr(JaccardCooccurrence(15)) == (
        "JaccardCooccurrence(k=15, key='cooc', user_type='user', item_type='item', attr='inter_index')")
    assert repr(JaccardCooccurrence(5, key="co", attr="ui")).endswith("key='co', user_type='user', "
                                                                       "item_type='item', attr='ui')")
    assert repr(Union()) == ("Union(keys=('knn', 'cooc'), normalization='row', out_key='refined', "
                             "node_type='item')")
    assert repr(Union(keys=["knn"], out_key="semantic", node_type="product")).endswith(
        "out_key='semantic', node_type='product')")


@pytest.mark.parametrize("x, message", [
    (torch.tensor([[1.0, float("nan")], [1.0, 2.0], [0.5, 1.0]]), "NaN or inf"),
    (torch.tensor([[1.0, float("inf")], [1.0, 2.0], [0.5, 1.0]]), "NaN or inf"),
    (torch.tensor([[0.0, 0.0], [1.0, 2.0], [0.5, 1.0]]), "all-zero"),
    (torch.tensor([[1, 2], [3, 4], [5, 6]]), "floating-point"),
    (torch.ones(3), "shape"),
    (torch.ones(0, 4), "empty"),
])
def test_bad_features(x, message):
    with pytest.raises((ValueError, TypeError), match=message) as err:
        ThresholdKNN(k=1)(Data(x=x))
    assert "data.x" in str(err.value)


def test_bad_arguments():
    x = clustered_features(10)
    with pytest.raises(ValueError, match="`k`"):
        ThresholdKNN(k=0)
    with pytest.raises(TypeError, match="`k`"):
        ThresholdKNN(k=2.5)
    with pytest.raises(ValueError, match="`k`=10 must be smaller"):
        ThresholdKNN(k=10)(Data(x=x))
    with pytest.raises(ValueError, match="`threshold`"):
        ThresholdKNN(k=2, threshold=1.5)
    with pytest.raises(TypeError, match="`threshold`"):
        ThresholdKNN(k=2, threshold="0.7")
    with pytest.raises(ValueError, match="data.x` is missing"):
        ThresholdKNN(k=2)(Data(num_nodes=3))
    with pytest.raises(ValueError, match="`normalization`"):
        Union(normalization="sym")
    with pytest.raises(ValueError, match="found none of the graphs"):
        Union()(Data(x=x))
    with pytest.raises(ValueError, match="num_layers"):
        LightGCNPropagation(-1)


@pytest.mark.parametrize("ui, message", [
    (None, "inter_index` is missing"),
    (torch.tensor([[0, 1], [0, 1]], dtype=torch.int32), "torch.long"),
    (torch.tensor([[0, 1, 2]]), r"shape \[2, num_interactions\]"),
    (torch.zeros(2, 0, dtype=torch.long), "no interactions"),
    (torch.tensor([[0, 5], [0, 1]]), "user index 5 >= num_users=5"),
    (torch.tensor([[0, 1], [0, 10]]), "item index 10 >= num_items=10"),
    (torch.tensor([[0, -1], [0, 1]]), "negative"),
    ([[0, 1], [0, 1]], "torch.Tensor"),
])
def test_bad_interactions(ui, message):
    data = Data(x=clustered_features(10), num_users=5)
    if ui is not None:
        data.inter_index = ui
    with pytest.raises((ValueError, TypeError), match=message) as err:
        JaccardCooccurrence(k=2)(data)
    assert "inter_index" in str(err.value) or "num_users" in str(err.value)


def test_missing_counts():
    ui = torch.tensor([[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="num_items"):
        JaccardCooccurrence(k=1)(Data(inter_index=ui, num_users=2))
    with pytest.raises(ValueError, match="num_users"):
        JaccardCooccurrence(k=1)(Data(inter_index=ui, num_items=3))
    with pytest.raises(ValueError, match="exactly one"):
        JaccardCooccurrence(k=1)(HeteroData())
