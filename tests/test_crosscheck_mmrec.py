"""FREEDOM, SMORE, LATTICE, VBPR, SLMRec and LGMRec against the reference classes of
MMRec, same weights.

Runs only where a checkout of github.com/enoche/MMRec is given (nothing of it is in
this repository)::

    git clone https://github.com/enoche/MMRec /tmp/MMRec
    MMREC_SRC=/tmp/MMRec/src pytest tests/test_crosscheck_mmrec.py

The reference models are built on CPU through the stand-ins of ``tests/reference_code.py``: their base class
(``n_users``, ``n_items``, the features, ``batch_size``) and MMRec's ``.cuda()``
calls made no-ops; MMRec has no [PAD] item, so its item ``i`` is our item ``i + 1``.
Compared: the item graphs, the final user and item embeddings (VBPR: and the
all-item scores), a batch's loss (SLMRec: its in-batch InfoNCE and FAC terms;
LGMRec: its hypergraph vectors and the user and item hypergraph-contrastive terms)
and the gradients (LATTICE: through its learned graph; VBPR, SLMRec, LGMRec: of the
ID tables and projections). Where a documented deliberate difference of ours would
make the two differ, the test sets one side so that both compute the same maths, and
says so: VBPR concatenates text then image features (``use_modalities``), SLMRec's
audio-stage map, which we leave out, is the identity, and LGMRec runs without
assignment dropout, with its Gumbel noise fixed per user and item, and without a
[PAD] user on the reference side.
"""
import importlib
import os

import pytest
import torch
from torch.nn import functional as F

from recbole_models.model.lgmrec import contrast_all
from recbole_models.model.slmrec import in_batch_infonce
from tests.recbole_data import write_tiny_multimodal_dataset
from tests.reference_code import ReferenceData, batch, build, reference_imports, skip_unless_reference
from tests.reference_code import plain_argv  # noqa: F401  (autouse fixture)

MMREC_SRC = os.environ.get("MMREC_SRC")
pytestmark = skip_unless_reference("MMREC_SRC", "models", "freedom.py")
MODELS = ("FREEDOM", "SMORE", "LATTICE", "VBPR", "SLMRec", "LGMRec")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    with reference_imports(MMREC_SRC):
        yield ({name: getattr(importlib.import_module(f"models.{name.lower()}"), name) for name in MODELS},
               str(tmp_path_factory.mktemp("mmrec_cache")))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    return write_tiny_multimodal_dataset(str(tmp_path_factory.mktemp("mm")), n_users=60, n_items=80, per_user=10)[0]


def reference_config(cache, batch_size, **keys):
    os.makedirs(os.path.join(cache, "tinymm"), exist_ok=True)
    return dict(keys, data_path=cache + "/", dataset="tinymm", train_batch_size=batch_size)


def copy_ids(ours, ref):
    with torch.no_grad():
        ref.user_embedding.weight.copy_(ours.user_embedding.weight)
        ref.item_id_embedding.weight.copy_(ours.item_id_embedding.weight[1:])


def assert_embeddings_equal(ours, ref, *args):
    ours.eval()
    with torch.no_grad():
        u_o, i_o = ours.all_embeddings()
        u_r, i_r = ref.forward(*args)
    torch.testing.assert_close(u_o, u_r)
    torch.testing.assert_close(i_o[1:], i_r)


def test_freedom(reference, config_file):
    classes, cache = reference
    ours = build(config_file, "FREEDOM", {"knn_k": 5, "dropout": 0.0, "reg_weight": 1e-3})
    ref = classes["FREEDOM"](reference_config(
        cache, 2048, embedding_size=64, feat_embed_dim=64, knn_k=5, lambda_coeff=0.9, cf_model="lightgcn",
        n_mm_layers=1, n_ui_layers=2, reg_weight=1e-3, mm_image_weight=0.1, dropout=0.0, degree_ratio=1.0),
        ReferenceData(ours))
    copy_ids(ours, ref)
    for m in ("image", "text"):
        getattr(ref, f"{m}_trs").load_state_dict(ours.projections[m].state_dict())
    torch.testing.assert_close(ours.sparse("mm_adj").to_dense()[1:, 1:], ref.mm_adj.to_dense())
    assert_embeddings_equal(ours, ref, ref.norm_adj)
    ours.train()
    ref.pre_epoch_processing()  # dropout 0: the full graph on both sides
    ours_batch, ref_batch = batch(ours)
    torch.testing.assert_close(ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch))


def test_smore(reference, config_file):
    classes, cache = reference
    ours = build(config_file, "SMORE", {"modality_knn_k": {"image": 6, "text": 4}, "dropout_rate": 0.0,
                                        "n_ui_layers": 3})
    ref = classes["SMORE"](reference_config(
        cache, ours.batch_size, cl_loss=0.01, n_ui_layers=3, embedding_size=64, n_layers=1, reg_weight=1e-4,
        image_knn_k=6, text_knn_k=4, dropout_rate=0.0), ReferenceData(ours))
    copy_ids(ours, ref)
    for m, s in (("image", "v"), ("text", "t")):
        getattr(ref, f"{m}_trs").load_state_dict(ours.projections[m].state_dict())
        getattr(ref, f"query_{s}").load_state_dict(ours.queries[m].state_dict())
        getattr(ref, f"gate_{s}").load_state_dict(ours.item_gates[m].state_dict())
        getattr(ref, f"gate_{m}_prefer").load_state_dict(ours.prefer_gates[m].state_dict())
    ref.gate_f.load_state_dict(ours.item_gates["fusion"].state_dict())
    ref.gate_fusion_prefer.load_state_dict(ours.prefer_gates["fusion"].state_dict())
    with torch.no_grad():
        for m in ("image", "text", "fusion"):
            getattr(ref, f"{m}_complex_weight").copy_(ours.filters[m])
    for m, adj in (("image", ref.image_original_adj), ("text", ref.text_original_adj), ("fusion", ref.fusion_adj)):
        torch.testing.assert_close(ours.sparse(f"adj_{m}").to_dense()[1:, 1:], adj.to_dense())
    ref.eval()
    assert_embeddings_equal(ours, ref, ref.norm_adj)
    ours.train()
    ref.train()
    ours_batch, ref_batch = batch(ours)
    torch.testing.assert_close(ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch))


def test_lattice(reference, config_file):
    classes, cache = reference
    ours = build(config_file, "LATTICE", {"knn_k": 5})
    ref = classes["LATTICE"](reference_config(
        cache, ours.batch_size, embedding_size=64, feat_embed_dim=64, weight_size=[64, 64], knn_k=5,
        lambda_coeff=0.9, cf_model="lightgcn", n_layers=1, reg_weight=ours.reg_weight, mess_dropout=[0.1, 0.1]),
        ReferenceData(ours))
    copy_ids(ours, ref)
    with torch.no_grad():
        for m in ("image", "text"):
            getattr(ref, f"{m}_trs").load_state_dict(ours.projections[m].state_dict())
        ours.modal_weight.copy_(torch.tensor([0.3, -0.2]))  # unequal modality weights
        ref.modal_weight.copy_(ours.modal_weight)
    torch.testing.assert_close(ours.sparse("original_image").to_dense()[1:, 1:], ref.image_original_adj)
    assert_embeddings_equal(ours, ref, ref.norm_adj, True)
    index, value = ours.item_graph()
    graph = torch.zeros(ours.n_items, ours.n_items).index_put((index[0], index[1]), value.detach(), accumulate=True)
    torch.testing.assert_close(graph[1:, 1:], ref.item_adj)

    ours.train()
    ref.pre_epoch_processing()  # the first batch of an epoch learns the graph, with gradients
    ours_batch, ref_batch = batch(ours)
    loss_o, loss_r = ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch)
    torch.testing.assert_close(loss_o, loss_r)
    loss_o.backward()
    loss_r.backward()
    torch.testing.assert_close(ours.projections["text"].weight.grad, ref.text_trs.weight.grad)
    torch.testing.assert_close(ours.modal_weight.grad, ref.modal_weight.grad)


def grads_equal(pairs):
    """``(our parameter, reference parameter)`` pairs, of the same shape."""
    for ours, ref in pairs:
        torch.testing.assert_close(ours.grad, ref.grad)


def test_vbpr(reference, config_file):
    classes, cache = reference
    # MMRec concatenates text then image features; ours follows `use_modalities`.
    ours = build(config_file, "VBPR", {"use_modalities": ["text", "image"], "embedding_size": 64, "reg_weight": 1e-2})
    ref = classes["VBPR"](reference_config(cache, 2048, embedding_size=64, reg_weight=1e-2), ReferenceData(ours))
    with torch.no_grad():
        ref.u_embedding.copy_(ours.user_embedding)
        ref.i_embedding.copy_(ours.item_embedding[1:])
    ref.item_linear.load_state_dict(ours.item_linear.state_dict())
    assert_embeddings_equal(ours, ref)  # its forward(dropout=0.0): no dropout
    ours_batch, ref_batch = batch(ours)
    with torch.no_grad():  # all-item scores of the batch's users
        torch.testing.assert_close(ours.full_sort_predict(ours_batch).view(ref_batch.size(1), -1)[:, 1:],
                                   ref.full_sort_predict(ref_batch))
    ours.train()
    loss_o, loss_r = ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch)
    torch.testing.assert_close(loss_o, loss_r)  # both of shape [1] (their EmbLoss)
    loss_o.backward()
    loss_r.backward()
    grads_equal([(ours.user_embedding, ref.u_embedding), (ours.item_linear.weight, ref.item_linear.weight)])
    torch.testing.assert_close(ours.item_embedding.grad[1:], ref.i_embedding.grad)


def test_slmrec(reference, config_file):
    classes, cache = reference
    # FAC chain: image (fine), then text (coarse), as the reference's v then t.
    ours = build(config_file, "SLMRec", {"embedding_size": 64, "n_layers": 3, "temp": 0.2, "ssl_alpha": 0.5,
                                         "ssl_temp": 0.5, "mm_fusion_mode": "concat"})
    ref = classes["SLMRec"](reference_config(
        cache, 2048, recdim=64, layer_num=3, ssl_task="FAC", ssl_alpha=0.5, ssl_temp=0.5, temp=0.2,
        mm_fusion_mode="concat", init="xavier", adj_type="pre"), ReferenceData(ours))
    with torch.no_grad():
        ref.embedding_user.weight.copy_(ours.user_embedding.weight)
        ref.embedding_item.weight.copy_(ours.item_embedding.weight[1:])
        # Deliberate difference: the reference still maps the ID vector through the absent
        # audio stage (g_iv_iva) between the image and text spaces; as the identity map it
        # is our two-space chain.
        ref.g_iv_iva.weight.copy_(torch.eye(64))
        ref.g_iv_iva.bias.zero_()
    for mine, theirs in ((ours.dense["image"], ref.v_dense), (ours.dense["text"], ref.t_dense),
                         (ours.user_fusion, ref.embedding_user_after_GCN),
                         (ours.item_fusion, ref.embedding_item_after_GCN),
                         (ours.fac_anchor[0], ref.g_i_iv), (ours.fac_target[0], ref.g_v_iv),
                         (ours.fac_anchor[1], ref.g_iva_ivat), (ours.fac_target[1], ref.g_t_ivat)):
        theirs.load_state_dict(mine.state_dict())
    ours.eval()
    with torch.no_grad():
        u_o, i_o = ours.all_embeddings()
        u_r, i_r = ref.compute()  # its forward(users, items) scores pairs; compute() is the vectors
    torch.testing.assert_close(u_o, u_r)
    torch.testing.assert_close(i_o[1:], i_r)
    # Not compared: full_sort_predict (deliberate difference: the reference scores with the
    # vectors cached by its last training step, through a sigmoid).

    ours.train()
    ours_batch, ref_batch = batch(ours)
    user, pos = ours_batch[ours.USER_ID], ours_batch[ours.ITEM_ID]
    loss_o, loss_r = ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch)
    torch.testing.assert_close(loss_o, loss_r)
    with torch.no_grad():  # term by term: the main in-batch InfoNCE and FAC (ref.compute() was just run)
        e_u, e_i = ours.all_embeddings()
        main = in_batch_infonce(F.normalize(e_u[user], dim=1), F.normalize(e_i[pos], dim=1), ours.temp)
        torch.testing.assert_close(main, ref.infonce(ref_batch[0], ref_batch[1]))
        torch.testing.assert_close(ours.fac_loss(ours.views(), pos), ref.fac(ref_batch[1]))
    loss_o.backward()
    loss_r.backward()
    grads_equal([(ours.user_embedding.weight, ref.embedding_user.weight),
                 (ours.dense["image"].weight, ref.v_dense.weight), (ours.dense["text"].weight, ref.t_dense.weight),
                 (ours.fac_anchor[0].weight, ref.g_i_iv.weight), (ours.fac_anchor[1].weight, ref.g_iva_ivat.weight),
                 (ours.fac_target[1].weight, ref.g_t_ivat.weight),
                 (ours.item_fusion.weight, ref.embedding_item_after_GCN.weight)])
    torch.testing.assert_close(ours.item_embedding.weight.grad[1:], ref.embedding_item.weight.grad)


def fixed_gumbel(monkeypatch, ours):
    """``F.gumbel_softmax`` with its Gumbel noise fixed per user and per item, so that both
    sides draw the same noise for the same user or item (ours has the [PAD] rows the
    reference lacks, so no shared seed could line the draws up); otherwise torch's maths."""
    g = torch.Generator().manual_seed(1)
    noise = {n: -torch.empty(n, ours.hyper_num).exponential_(generator=g).log()
             for n in (ours.n_users, ours.n_items)}
    assert len({ours.n_users, ours.n_items, ours.n_users - 1, ours.n_items - 1}) == 4

    def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        assert not hard
        n = logits.size(0)
        return torch.softmax((logits + (noise[n] if n in noise else noise[n + 1][1:])) / tau, dim=dim)

    monkeypatch.setattr(F, "gumbel_softmax", gumbel_softmax)


def test_lgmrec(reference, config_file, monkeypatch):
    classes, cache = reference
    keys = dict(embedding_size=64, feat_embed_dim=64, cf_model="lightgcn", n_ui_layers=2, n_mm_layers=2,
                n_hyper_layer=2, hyper_num=4, keep_rate=1.0, alpha=0.3, cl_weight=0.1, reg_weight=1e-3)
    # keep_rate 1: no dropout on the hyperedge assignments (the two sides could not draw the
    # same masks: ours has the [PAD] rows); the Gumbel noise is fixed per user and item below.
    # cl_weight and reg_weight larger than the defaults, so that their terms weigh in.
    ours = build(config_file, "LGMRec", keys)
    # Deliberate difference: our [PAD] user is left out of the contrastive denominators;
    # MMRec has no [PAD] user, so its reference data has none either (its user u is our u + 1).
    ref = classes["LGMRec"](reference_config(cache, 2048, **keys), ReferenceData(ours, pad_user=False))
    with torch.no_grad():
        ref.user_embedding.weight.copy_(ours.user_embedding[1:])
        ref.item_id_embedding.weight.copy_(ours.item_embedding[1:])
        for m, trs, hyper in (("image", ref.item_image_trs, ref.v_hyper), ("text", ref.item_text_trs, ref.t_hyper)):
            trs.copy_(ours.projection[m])
            hyper.copy_(ours.hyper[m])
    fixed_gumbel(monkeypatch, ours)

    with torch.no_grad():
        u_o, i_o, hyper_o = ours.forward()
        u_r, i_r, hyper_r = ref.forward()
    torch.testing.assert_close(u_o[1:], u_r)
    torch.testing.assert_close(i_o[1:], i_r)
    for (g_u, g_i), r_u, r_i in ((hyper_o["image"], *hyper_r[:2]), (hyper_o["text"], *hyper_r[2:])):
        torch.testing.assert_close(g_u[1:], r_u)  # the hypergraph (global) vectors of each modality
        torch.testing.assert_close(g_i[1:], r_i)

    ours.train()
    ours_batch, ref_batch = batch(ours)
    ref_batch[0] -= 1
    user, pos = ours_batch[ours.USER_ID], ours_batch[ours.ITEM_ID]
    loss_o, loss_r = ours.calculate_loss(ours_batch), ref.calculate_loss(ref_batch)
    torch.testing.assert_close(loss_o, loss_r)
    with torch.no_grad():  # term by term (the draws are fixed, so a second forward is the same)
        u_o, i_o, hyper_o = ours.forward()
        u_r, i_r, (uv, iv, ut, it) = ref.forward()
        (uv_o, iv_o), (ut_o, it_o) = hyper_o["image"], hyper_o["text"]
        ref_u, ref_i = ref_batch[0], ref_batch[1]
        hcl_users = ref.ssl_triple_loss(uv[ref_u], ut[ref_u], ut)  # image against text, over all users
        hcl_items = ref.ssl_triple_loss(iv[ref_i], it[ref_i], it)  # and over all items
        torch.testing.assert_close(contrast_all(uv_o[user], ut_o[user], ut_o[1:], ours.tau), hcl_users)
        torch.testing.assert_close(contrast_all(iv_o[pos], it_o[pos], it_o[1:], ours.tau), hcl_items)
        hcl_o = ours.hypergraph_contrast(hyper_o, user, pos)
        torch.testing.assert_close(hcl_o, hcl_users + hcl_items)
        embs_r = u_r[ref_u], i_r[ref_i], i_r[ref_batch[2]]
        torch.testing.assert_close(loss_o - ours.cl_weight * hcl_o,  # the rest: BPR + regulariser
                                   ref.bpr_loss(*embs_r) + ref.reg_weight * ref.reg_loss(*embs_r))
    loss_o.backward()
    loss_r.backward()
    grads_equal([(ours.projection["image"], ref.item_image_trs), (ours.projection["text"], ref.item_text_trs),
                 (ours.hyper["image"], ref.v_hyper), (ours.hyper["text"], ref.t_hyper)])
    torch.testing.assert_close(ours.user_embedding.grad[1:], ref.user_embedding.weight.grad)
    torch.testing.assert_close(ours.item_embedding.grad[1:], ref.item_id_embedding.weight.grad)
