import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing

from graph_data import clustered_features, sparse_interactions
import mllmrec_pyg.nn
from mllmrec_pyg.nn import LightGCNPropagation
from mllmrec_pyg.testing.reference import reference_propagate
from mllmrec_pyg.transforms import JaccardCooccurrence, ThresholdKNN, Union


def graph(n=80, u=300):
    x = clustered_features(n)
    ui = sparse_interactions(u, n, per_user=3)
    return T.Compose([ThresholdKNN(k=6, threshold=0.5), JaccardCooccurrence(k=6), Union()])(
        Data(x=x, inter_index=ui, num_users=u))


def dense_l(g):
    n = g.num_nodes
    return torch.sparse_coo_tensor(g.edge_index.flip(0), g.edge_weight, (n, n)).to_dense()


def test_is_one_message_passing_without_parameters():
    prop = LightGCNPropagation(3)
    assert isinstance(prop, MessagePassing)
    assert list(prop.parameters()) == [] and prop.state_dict() == {}
    assert repr(prop) == "LightGCNPropagation(num_layers=3, normalize=False, combine='sum')"


def test_deprecated_alias_warns_and_propagates_the_same():
    g = graph()
    with pytest.warns(DeprecationWarning, match="LightGCNPropagation"):
        old = mllmrec_pyg.nn.LightGCN(num_layers=2, combine="mean")
    assert isinstance(old, LightGCNPropagation)
    torch.testing.assert_close(old(g.x, g.edge_index, g.edge_weight),
                               LightGCNPropagation(2, combine="mean")(g.x, g.edge_index, g.edge_weight))


def test_equals_pyg_lightgcn_embedding_with_normalize_and_mean():
    # PyG's LightGCN recommender = this propagation (gcn_norm, mean of layers) of its embedding table.
    from torch_geometric.nn.models import LightGCN as PyGLightGCN

    g = graph()
    ei = T.ToUndirected()(Data(edge_index=g.edge_index, num_nodes=g.num_nodes)).edge_index
    model = PyGLightGCN(num_nodes=g.num_nodes, embedding_dim=16, num_layers=3)
    ours = LightGCNPropagation(3, normalize=True, combine="mean")(model.embedding.weight, ei)
    torch.testing.assert_close(ours, model.get_embedding(ei), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_layer_sum_matches_dense(layers):
    g = graph()
    h = LightGCNPropagation(layers)(g.x, g.edge_index, g.edge_weight)
    torch.testing.assert_close(h, reference_propagate(dense_l(g), g.x, layers), atol=1e-5, rtol=1e-5)
    if layers == 0:
        assert torch.equal(h, g.x)


def test_mean_combine():
    g = graph()
    s = LightGCNPropagation(2)(g.x, g.edge_index, g.edge_weight)
    m = LightGCNPropagation(2, combine="mean")(g.x, g.edge_index, g.edge_weight)
    torch.testing.assert_close(m, s / 3)


@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo, None])
def test_sparse_adjacency_input(layout):
    g = graph()
    expected = LightGCNPropagation(2)(g.x, g.edge_index, g.edge_weight)
    s = T.ToSparseTensor(attr="edge_weight", layout=layout)(g)  # the transforms' own output
    torch.testing.assert_close(LightGCNPropagation(2)(s.x, s.adj_t), expected, atol=1e-6, rtol=1e-5)
    # normalize=True on a sparse adjacency equals it on edge_index.
    raw = T.ToSparseTensor(attr="edge_weight", layout=layout)(
        Data(x=g.x, **g.item_graphs["refined"]))
    torch.testing.assert_close(LightGCNPropagation(2, normalize=True)(raw.x, raw.adj_t), expected,
                               atol=1e-6, rtol=1e-5)


def test_normalize_flag_equals_union_normalisation():
    g = graph()
    raw = LightGCNPropagation(1, normalize=True)(g.x, **g.item_graphs["refined"])
    torch.testing.assert_close(raw, LightGCNPropagation(1)(g.x, g.edge_index, g.edge_weight))


def test_gradients_flow_to_features():
    g = graph()
    x = g.x.clone().requires_grad_()
    LightGCNPropagation(2)(x, g.edge_index, g.edge_weight).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_missing_graph_is_an_error():
    with pytest.raises(ValueError, match="edge_index"):
        LightGCNPropagation(1)(torch.ones(3, 2))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    g = graph()
    cpu = LightGCNPropagation(2)(g.x, g.edge_index, g.edge_weight)
    gg = graph().to("cuda")  # the kept graphs (a nested dict) move too
    assert gg.item_graphs["refined"]["edge_index"].is_cuda
    gpu = LightGCNPropagation(2).cuda()(gg.x, gg.edge_index, gg.edge_weight)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    s = T.ToSparseTensor(attr="edge_weight", layout=torch.sparse_csr)(gg)
    torch.testing.assert_close(LightGCNPropagation(2)(s.x, s.adj_t).cpu(), cpu, atol=1e-5, rtol=1e-5)
    raw = LightGCNPropagation(2, normalize=True)(gg.x, **gg.item_graphs["refined"])
    torch.testing.assert_close(raw.cpu(), cpu, atol=1e-5, rtol=1e-5)
