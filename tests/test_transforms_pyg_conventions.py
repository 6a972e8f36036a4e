"""The transforms' output follows PyG's conventions: PyG's own transforms and
DataLoader work on it as it is (no copying into a fresh Data)."""
import warnings

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data, HeteroData
from torch_geometric.loader import DataLoader
from torch_geometric.utils import to_undirected

from graph_data import clustered_features, sparse_interactions
from mllmrec_pyg.data import ItemGraphData
from mllmrec_pyg.graph_stats import graph_statistics
from mllmrec_pyg.nn import LightGCNPropagation
from mllmrec_pyg.transforms import (
    JaccardCooccurrence,
    ThresholdKNN,
    Union,
    jaccard_cooccurrence_graph,
    threshold_knn_graph,
)


def build(num_items=500, num_users=800, seed=0, **names):
    x = clustered_features(num_items, seed=seed)
    ui = sparse_interactions(num_users, num_items, per_user=4, seed=seed)
    return T.Compose([ThresholdKNN(k=10, threshold=0.5), JaccardCooccurrence(k=10), Union()])(
        Data(x=x, inter_index=ui, num_users=num_users))


def dense(edge_index, edge_weight, n):
    """A[i, j] = weight of edge (j -> i)."""
    return torch.sparse_coo_tensor(edge_index.flip(0), edge_weight, (n, n)).to_dense()


@pytest.fixture(scope="module")
def graph():
    return build()


def test_kept_graphs_are_not_edge_attributes(graph):
    assert set(graph.edge_attrs()) == {"edge_index", "edge_weight"}
    assert set(graph.item_graphs) == {"knn", "cooc", "refined"}
    for kept in graph.item_graphs.values():
        assert set(kept) == {"edge_index", "edge_weight"}


@pytest.mark.parametrize("layout", [None, torch.sparse_csr])
def test_to_sparse_tensor_on_own_output(graph, layout):
    # The documented call (docs/graph.md), on the transforms' own output.
    out = T.ToSparseTensor(attr="edge_weight", layout=layout)(graph)
    assert "edge_index" not in out and "edge_weight" not in out
    n = graph.num_nodes
    assert torch.equal(out.adj_t.to_dense(), dense(graph.edge_index, graph.edge_weight, n))
    assert torch.equal(out.item_graphs["knn"]["edge_index"], graph.item_graphs["knn"]["edge_index"])
    expected = LightGCNPropagation(1)(graph.x, graph.edge_index, graph.edge_weight)
    torch.testing.assert_close(LightGCNPropagation(1)(out.x, out.adj_t), expected, atol=1e-6, rtol=1e-5)


def test_to_undirected_on_own_output(graph):
    out = T.ToUndirected()(graph)
    ei, ew = to_undirected(graph.edge_index, graph.edge_weight, graph.num_nodes)
    assert torch.equal(out.edge_index, ei)
    assert torch.equal(out.edge_weight, ew)
    assert out.is_undirected()
    for key, kept in graph.item_graphs.items():  # left as built
        assert torch.equal(out.item_graphs[key]["edge_index"], kept["edge_index"])
    assert torch.equal(out.inter_index, graph.inter_index)


def test_random_link_split_on_own_output(graph):
    train, val, test = T.RandomLinkSplit(num_val=0.1, num_test=0.1)(graph)
    n, e = graph.num_nodes, graph.num_edges
    a = dense(graph.edge_index, graph.edge_weight, n)
    for split in (train, val, test):
        # edge_weight still belongs to edge_index: each weight is that edge's weight in L.
        assert split.edge_weight.numel() == split.edge_index.size(1)
        assert torch.equal(split.edge_weight, a[split.edge_index[1], split.edge_index[0]])
        assert torch.equal(split.inter_index, graph.inter_index)
    positives = [s.edge_label_index[:, s.edge_label == 1].size(1) for s in (train, val, test)]
    assert sum(positives) == e
    assert train.edge_index.size(1) == positives[0]


def test_pyg_transforms_on_heterodata_output():
    x = clustered_features(200)
    ui = sparse_interactions(300, 200, per_user=3)
    hetero = HeteroData()
    hetero["user"].num_nodes = 300
    hetero["item"].x = x
    hetero["user", "rates", "item"].edge_index = ui
    out = T.Compose([ThresholdKNN(k=5, threshold=0.5), JaccardCooccurrence(k=5), Union()])(hetero)
    und = T.ToUndirected()(out)
    g = out["item", "refined", "item"]
    ei, ew = to_undirected(g.edge_index, g.edge_weight, 200)
    assert torch.equal(und["item", "refined", "item"].edge_index, ei)
    assert torch.equal(und["item", "refined", "item"].edge_weight, ew)
    assert ("item", "rev_rates", "user") in und.edge_types


def test_batch_of_two_graphs_keeps_user_and_item_ids():
    g1 = build(300, 400, seed=1)
    g2 = build(200, 250, seed=2)
    assert type(g1) is ItemGraphData
    batch = next(iter(DataLoader([g1, g2], batch_size=2)))
    shift = torch.tensor([[400], [300]])
    assert torch.equal(batch.inter_index, torch.cat([g1.inter_index, g2.inter_index + shift], dim=1))
    assert torch.equal(batch.edge_index, torch.cat([g1.edge_index, g2.edge_index + 300], dim=1))
    for key in ("knn", "cooc", "refined"):
        assert torch.equal(batch.item_graphs[key]["edge_index"],
                           torch.cat([g1.item_graphs[key]["edge_index"],
                                      g2.item_graphs[key]["edge_index"] + 300], dim=1))
    assert batch.num_users.tolist() == [400, 250]
    # Users of g2 no longer collide with g1's: the co-occurrence graph of the batch is block-diagonal.
    ei, ew = jaccard_cooccurrence_graph(batch.inter_index, 650, 500, 10)
    c1, c2 = g1.item_graphs["cooc"], g2.item_graphs["cooc"]
    assert torch.equal(ei, torch.cat([c1["edge_index"], c2["edge_index"] + 300], dim=1))
    assert torch.equal(ew, torch.cat([c1["edge_weight"], c2["edge_weight"]]))
    # And back: the second example is g2.
    back = batch.get_example(1)
    assert torch.equal(back.inter_index, g2.inter_index)
    assert torch.equal(back.item_graphs["knn"]["edge_index"], g2.item_graphs["knn"]["edge_index"])
    h = LightGCNPropagation(1)(batch.x, batch.edge_index, batch.edge_weight)
    h1 = LightGCNPropagation(1)(g1.x, g1.edge_index, g1.edge_weight)
    h2 = LightGCNPropagation(1)(g2.x, g2.edge_index, g2.edge_weight)
    torch.testing.assert_close(h, torch.cat([h1, h2]))


def test_named_feature_and_interaction_attributes():
    x = clustered_features(120)
    ui = sparse_interactions(200, 120, per_user=3)
    default = build_pipeline()(Data(x=x, inter_index=ui, num_users=200))
    named = build_pipeline(attr_x="text_emb", attr_ui="ui")(Data(text_emb=x, ui=ui, num_users=200))
    assert named.num_nodes == 120 and "x" not in named
    assert torch.equal(named.edge_index, default.edge_index)
    assert torch.equal(named.edge_weight, default.edge_weight)
    assert named.inter_attr == "ui"
    # Batching shifts the renamed interaction attribute by (num_users, num_items).
    batch = next(iter(DataLoader([named, named], batch_size=2)))
    assert torch.equal(batch.ui, torch.cat([ui, ui + torch.tensor([[200], [120]])], dim=1))
    assert batch.inter_attr == "ui"
    assert torch.equal(batch.get_example(1).ui, ui)
    # The names appear in errors.
    with pytest.raises(ValueError, match=r"`data.text_emb` is missing"):
        ThresholdKNN(k=3, attr="text_emb")(Data(x=x))
    with pytest.raises(ValueError, match=r"`data.ui` is missing"):
        JaccardCooccurrence(k=3, attr="ui")(Data(x=x, inter_index=ui, num_users=200))
    hetero = HeteroData()
    hetero["item"].text_emb = x
    out = ThresholdKNN(k=10, threshold=0.5, attr="text_emb")(hetero)
    assert torch.equal(out["item", "knn", "item"].edge_index, default.item_graphs["knn"]["edge_index"])


def build_pipeline(attr_x="x", attr_ui="inter_index"):
    return T.Compose([ThresholdKNN(k=10, threshold=0.5, attr=attr_x),
                      JaccardCooccurrence(k=5, attr=attr_ui), Union()])


def test_transforms_do_not_mutate_their_input():
    x = clustered_features(60)
    ui = sparse_interactions(100, 60)
    first = ThresholdKNN(k=4, threshold=0.5)(Data(x=x, inter_index=ui, num_users=100))
    second = JaccardCooccurrence(k=4)(first)
    assert set(first.item_graphs) == {"knn"}
    assert set(second.item_graphs) == {"knn", "cooc"}


def test_weighted_graph_of_features_that_require_grad():
    x = clustered_features(80).requires_grad_()
    ei, ew = threshold_knn_graph(x, 5, 0.5, weighted=True)
    assert not ew.requires_grad  # the graph is a constant of the features
    ei0, ew0 = threshold_knn_graph(x.detach(), 5, 0.5, weighted=True)
    assert torch.equal(ei, ei0) and torch.equal(ew, ew0)
    g = ThresholdKNN(k=5, threshold=0.5, weighted=True)(Data(x=x))
    # Gradients still reach the features through the propagation itself.
    LightGCNPropagation(1)(g.x, g.edge_index, g.edge_weight).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_warns_when_most_items_keep_no_neighbour():
    x = clustered_features(500)
    message = (r"ThresholdKNN: \d+\.\d% of the items \(\d+ of 500\) keep no "
               r"neighbour other than themselves at threshold=0.99 \(k=10\)")
    with pytest.warns(UserWarning, match=message) as rec:
        g = ThresholdKNN(k=10, threshold=0.99)(Data(x=x))
    lonely = graph_statistics(g)["knn"]["items_without_neighbours"]
    assert lonely > 250
    assert f"({lonely} of 500)" in str(rec[0].message)
    assert (g.edge_index[0] == g.edge_index[1]).all()  # only self-loops: the case to flag
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = ThresholdKNN(k=10, threshold=0.5)(Data(x=x))  # most items keep neighbours: silent
        threshold_knn_graph(x, 1, 0.5)  # k=1 with the self-loop asks for no neighbour: silent
    assert graph_statistics(g)["knn"]["items_without_neighbours"] < 250


@pytest.mark.parametrize("block_size", [1, 5, None])
def test_duplicates_do_not_displace_the_self_loop(block_size):
    x = clustered_features(50)
    x = torch.cat([x, x[7:8].repeat(12, 1)])  # items 7 and 50..61 are identical
    group = [7] + list(range(50, 62))
    ei, _ = threshold_knn_graph(x, 10, 0.7, block_size=block_size)
    assert int((ei[0] == ei[1]).sum()) == 62
    for i in group:
        listed = sorted(ei[0, ei[1] == i].tolist())
        # Itself plus the k - 1 = 9 lowest-index duplicates among the others.
        assert listed == sorted({i} | set([j for j in group if j != i][:9]))
    # loop=False is unchanged: k others, no self-loop.
    ei, _ = threshold_knn_graph(x, 10, None, loop=False, block_size=block_size)
    assert not (ei[0] == ei[1]).any()
    assert (torch.bincount(ei[1], minlength=62) == 10).all()


@pytest.mark.cuda
def test_cuda_output_follows_the_same_conventions():
    x = clustered_features(50)
    x = torch.cat([x, x[7:8].repeat(12, 1)])
    ei, _ = threshold_knn_graph(x.cuda(), 10, 0.7)
    assert ei.is_cuda and int((ei[0] == ei[1]).sum()) == 62
    assert torch.equal(ei.cpu(), threshold_knn_graph(x, 10, 0.7)[0])
    cpu = [build(300, 400, seed=1), build(200, 250, seed=2)]
    gpu = []
    for seed, (n, u) in zip((1, 2), ((300, 400), (200, 250))):
        data = Data(x=clustered_features(n, seed=seed).cuda(),
                    inter_index=sparse_interactions(u, n, per_user=4, seed=seed).cuda(), num_users=u)
        gpu.append(T.Compose([ThresholdKNN(k=10, threshold=0.5), JaccardCooccurrence(k=10), Union()])(data))
    batch = next(iter(DataLoader(gpu, batch_size=2)))
    expected = next(iter(DataLoader(cpu, batch_size=2)))
    assert batch.inter_index.is_cuda
    assert torch.equal(batch.inter_index.cpu(), expected.inter_index)
    assert torch.equal(batch.edge_index.cpu(), expected.edge_index)
    torch.testing.assert_close(batch.edge_weight.cpu(), expected.edge_weight, atol=1e-6, rtol=1e-5)
    adj = T.ToSparseTensor(attr="edge_weight", layout=torch.sparse_csr)(gpu[0])
    h = LightGCNPropagation(1)(adj.x, adj.adj_t)
    expected_h = LightGCNPropagation(1)(cpu[0].x, cpu[0].edge_index, cpu[0].edge_weight)
    torch.testing.assert_close(h.cpu(), expected_h, atol=1e-5, rtol=1e-5)
