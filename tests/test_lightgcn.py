import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing

from graph_data import clustered_features, sparse_interactions
from mllmrec_pyg.nn import LightGCN
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


def test_layers_are_message_passing():
    assert all(isinstance(conv, MessagePassing) for conv in LightGCN(3).convs)


@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_layer_sum_matches_dense(layers):
    g = graph()
    h = LightGCN(layers)(g.x, g.edge_index, g.edge_weight)
    torch.testing.assert_close(h, reference_propagate(dense_l(g), g.x, layers), atol=1e-5, rtol=1e-5)
    if layers == 0:
        assert torch.equal(h, g.x)


def test_mean_combine():
    g = graph()
    s = LightGCN(2)(g.x, g.edge_index, g.edge_weight)
    m = LightGCN(2, combine="mean")(g.x, g.edge_index, g.edge_weight)
    torch.testing.assert_close(m, s / 3)


@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo, None])
def test_sparse_adjacency_input(layout):
    g = graph()
    expected = LightGCN(2)(g.x, g.edge_index, g.edge_weight)
    s = T.ToSparseTensor(attr="edge_weight", layout=layout)(
        Data(x=g.x, edge_index=g.edge_index, edge_weight=g.edge_weight))
    torch.testing.assert_close(LightGCN(2)(s.x, s.adj_t), expected, atol=1e-6, rtol=1e-5)


def test_normalize_flag_equals_union_normalisation():
    g = graph()
    raw = LightGCN(1, normalize=True)(g.x, g.refined_edge_index, g.refined_edge_weight)
    torch.testing.assert_close(raw, LightGCN(1)(g.x, g.edge_index, g.edge_weight))


def test_gradients_flow_to_features():
    g = graph()
    x = g.x.clone().requires_grad_()
    LightGCN(2)(x, g.edge_index, g.edge_weight).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_missing_graph_is_an_error():
    with pytest.raises(ValueError, match="edge_index"):
        LightGCN(1)(torch.ones(3, 2))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    g = graph()
    cpu = LightGCN(2)(g.x, g.edge_index, g.edge_weight)
    gpu = LightGCN(2).cuda()(g.x.cuda(), g.edge_index.cuda(), g.edge_weight.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
