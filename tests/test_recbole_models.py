"""MLLMRec under RecBole: features through RecBole's remapping, variants, checkpoints,
runner and comparison table, on tiny datasets written by the tests."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import Compose

from mllmrec_pyg.nn import LightGCNPropagation
from mllmrec_pyg.text.item_text import read_atomic
from mllmrec_pyg.transforms import JaccardCooccurrence, ThresholdKNN, Union
from recbole_models import MLLMRec, get_model
from recbole_models.compare import compare, load_variants, markdown_table, resolve
from recbole_models.compare import main as compare_main
from recbole_models.run import run_recbole
from tests.recbole_data import build_model, write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    # RecBole's Config reads `--key=value` from sys.argv: keep pytest's own flags out.
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_dataset(str(tmp_path))


def build(config_file, overrides=None, model="MLLMRec"):
    return build_model(model, config_file, "tiny", overrides)


def test_registry_falls_back_to_recbole():
    from recbole.model.general_recommender import BPR, LightGCN as RecBoleLightGCN

    assert get_model("MLLMRec") is MLLMRec
    assert get_model("BPR") is BPR
    assert get_model("LightGCN") is RecBoleLightGCN
    with pytest.raises(ValueError):
        get_model("NoSuchModel")
    # The failed lookup imported RecBole's SINE module, which turns anomaly mode on globally.
    assert not torch.is_anomaly_enabled()
    with pytest.raises(TypeError):
        get_model(3)


def test_features_follow_recbole_remapping(tiny):
    config_file, d, users, items = tiny
    config, dataset, train, model = build(config_file)
    item_file = read_atomic(os.path.join(d, "tiny.itememb"))
    user_file = read_atomic(os.path.join(d, "tiny.useremb"))
    # Row i of the model's user features is the file's row for the token RecBole calls i.
    for row in user_file.itertuples(index=False):
        uid = dataset.token2id(dataset.uid_field, row.uid)
        expected = torch.tensor([float(v) for v in row.user_emb.split()])
        torch.testing.assert_close(model.user_x[uid], expected)
    assert torch.equal(model.user_x[0], torch.zeros_like(model.user_x[0]))  # [PAD]

    # H = LightGCN over the graph of the TRAINING split, built from the files' tokens
    # laid out in RecBole's internal order (the tie rule of top-k depends on numbering).
    rows = {t: [float(v) for v in s.split()] for t, s in zip(item_file.iid, item_file.item_emb)}
    order = [dataset.id2token(dataset.iid_field, i) for i in range(1, dataset.item_num)]
    x = torch.tensor([rows[t] for t in order])
    train_rows = read_atomic(os.path.join(d, "tiny.train.inter"))
    ui = torch.tensor([[int(dataset.token2id(dataset.uid_field, u)) for u in train_rows.user_id],
                       [int(dataset.token2id(dataset.iid_field, i)) - 1 for i in train_rows.item_id]])
    g = Compose([ThresholdKNN(k=3, threshold=0.0), JaccardCooccurrence(k=3), Union()])(
        Data(x=x, inter_index=ui, num_users=dataset.user_num))
    h = LightGCNPropagation(num_layers=1)(x, g.edge_index, g.edge_weight)
    torch.testing.assert_close(model.item_h[1:], h)
    assert torch.equal(model.item_h[0], torch.zeros_like(model.item_h[0]))  # [PAD]


def test_graph_uses_training_interactions_only(tiny):
    config_file, d, _, _ = tiny
    _, _, _, model = build(config_file)
    before = model.item_h.clone()
    # Rewriting the valid and test files must not move H.
    rows = read_atomic(os.path.join(d, "tiny.valid.inter"))
    test_rows = read_atomic(os.path.join(d, "tiny.test.inter"))
    for name, frame in (("valid", test_rows), ("test", rows)):
        with open(os.path.join(d, f"tiny.{name}.inter"), "w") as f:
            f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
            for r in frame.itertuples(index=False):
                f.write(f"{r.user_id}\t{r.item_id}\t{r.rating}\t{r.timestamp}\n")
    _, _, _, again = build(config_file)
    torch.testing.assert_close(again.item_h, before)


VARIANTS = ["MLLMRec", "MLLMRec w/o RS", "MLLMRec w/o GD", "MLLMRec w/o TE", "MLLMRec w/o GCN",
            "MLLMRec +UI-GCN"]


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_trains_a_step(tiny, name):
    config_file, *_ = tiny
    model_name, overrides = resolve(name, load_variants())
    config, dataset, train, model = build(config_file, overrides, model_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = next(iter(train))
    before = [p.detach().clone() for p in model.parameters()]
    loss = model.calculate_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    model.eval()
    scores = model.full_sort_predict(batch).view(-1, model.n_items)
    assert torch.isfinite(scores).all()
    # predict and full_sort_predict agree on the same pairs.
    users, items = batch[model.USER_ID], batch[model.ITEM_ID]
    torch.testing.assert_close(model.predict(batch), scores[torch.arange(len(users)), items],
                               rtol=1e-4, atol=1e-5)
    if name == "MLLMRec w/o RS":
        assert model.user_embedding is not None and model.user_x is None


def test_wo_gcn_uses_raw_features_and_wo_te_drops_cooccurrence(tiny):
    config_file, d, *_ = tiny
    _, dataset, _, plain = build(config_file, {"n_item_layers": 0})
    raw = read_atomic(os.path.join(d, "tiny.itememb"))
    for row in raw.itertuples(index=False):
        expected = torch.tensor([float(v) for v in row.item_emb.split()])
        torch.testing.assert_close(plain.item_h[dataset.token2id(dataset.iid_field, row.iid)], expected)
    _, _, _, full = build(config_file)
    _, _, _, no_te = build(config_file, {"cooc_k": 0})
    assert not torch.allclose(full.item_h, no_te.item_h)


def test_bad_config_values(tiny):
    config_file, *_ = tiny
    with pytest.raises(ValueError, match="knn_k"):
        build(config_file, {"knn_k": 0})
    with pytest.raises(ValueError, match="use_preference"):
        build(config_file, {"use_preference": "yes"})


def _rewrite(path, edit):
    lines = open(path).read().splitlines(keepends=True)
    with open(path, "w") as f:
        f.writelines(edit(lines))


@pytest.mark.parametrize("case,pattern", [
    ("missing", "no row for 1"),
    ("extra", "does not have"),
    ("dimension", "has 15 values"),
    ("nan", "NaN or inf"),
    ("duplicate", "more than once"),
])
def test_bad_feature_files_name_the_file(tiny, case, pattern):
    config_file, d, *_ = tiny
    path = os.path.join(d, "tiny.itememb")
    if case == "missing":
        _rewrite(path, lambda ls: ls[:-1])
    elif case == "extra":
        _rewrite(path, lambda ls: ls + ["i999\t" + ls[1].split("\t")[1]])
    elif case == "dimension":
        _rewrite(path, lambda ls: ls[:2] + [ls[2].rsplit(" ", 1)[0] + "\n"] + ls[3:])
    elif case == "nan":
        _rewrite(path, lambda ls: ls[:3] + [ls[3].split("\t")[0] + "\t" + " ".join(["nan"] * 16) + "\n"] + ls[4:])
    elif case == "duplicate":
        _rewrite(path, lambda ls: ls + [ls[1]])
    with pytest.raises(ValueError, match=pattern) as err:
        build(config_file)
    assert "tiny.itememb" in str(err.value)


def test_checkpoint_round_trips_weights_only(tiny):
    config_file, *_ = tiny
    result = run_recbole("MLLMRec", "tiny", [config_file], {"epochs": 2})
    assert set(result["test_result"]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
    assert result["best_epoch"] >= 0 and result["train_time"] > 0
    state = torch.load(result["saved_model_file"], weights_only=True)
    config, dataset, train, fresh = build(config_file)
    fresh.load_state_dict(state["state_dict"])
    fresh.eval()
    batch = next(iter(train))
    assert state["config"]["model"] == "MLLMRec"
    # The reloaded model scores like the trained one: its test metrics are reproduced.
    again = run_recbole("MLLMRec", "tiny", [config_file], {"epochs": 2})
    assert again["test_result"] == result["test_result"]
    assert torch.isfinite(fresh.full_sort_predict(batch)).all()


def test_compare_writes_table(tiny, tmp_path):
    config_file, *_ = tiny
    results = compare(["MLLMRec", "BPR", "LightGCN", "MLLMRec w/o TE"], "tiny", [config_file])
    table = markdown_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("| Model | R@10 | R@20 | N@10 | N@20 | Best epoch | Train time (s) |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["MLLMRec", "BPR", "LightGCN", "MLLMRec w/o TE"]


def test_compare_in_processes_equals_one_thread_in_process(tiny):
    config_file, *_ = tiny
    names = ["MLLMRec", "BPR", "MLLMRec w/o TE"]
    finished = []
    parallel = compare(names, "tiny", [config_file], jobs=2, on_result=lambda r: finished.append(r["name"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each worker process uses
    try:
        serial = compare(names, "tiny", [config_file])
    finally:
        torch.set_num_threads(threads)
    assert [r["name"] for r in parallel] == names and sorted(finished) == sorted(names)
    for p, s in zip(parallel, serial):
        assert p["test_result"] == s["test_result"] and p["best_epoch"] == s["best_epoch"], p["name"]
    files = [r["saved_model_file"] for r in parallel + serial]
    assert len(set(files)) == len(files)  # no run overwrote another's best checkpoint


def test_compare_checks_names_and_jobs_before_training(tiny, capsys):
    config_file, *_ = tiny
    with pytest.raises(ValueError, match="NoSuchModel"):
        compare(["BPR", "NoSuchModel"], "tiny", [config_file], jobs=1)
    with pytest.raises(ValueError, match="jobs"):
        compare(["BPR"], "tiny", [config_file], jobs=-1)
    assert not os.path.isdir(os.path.join(os.path.dirname(config_file), "saved"))  # nothing ran
    with pytest.raises(ValueError, match="argument --jobs: must be >= 0, got -1"):
        compare_main(["--jobs", "-1", "--dataset", "tiny", "--config_files", config_file])
    # A run that fails inside its worker process is a result naming its error.
    (failed,) = compare(["MLLMRec"], "tiny", [config_file], jobs=1, config_dict={"knn_k": 0})
    assert failed["name"] == "MLLMRec" and failed["test_result"] == {}
    assert failed["error"].startswith("ValueError: ") and "knn_k" in failed["error"]


def test_demo_refuses_bad_jobs_before_any_work(tmp_path, capsys):
    from mllmrec_pyg.cli import main as cli_main

    # --data points at an empty directory: the check must come before anything reads it.
    assert cli_main(["demo", "--jobs", "0", "--data", str(tmp_path)]) == 2
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err


def test_runner_command_line_overrides_and_no_quick_start(tiny, tmp_path):
    config_file, *_ = tiny
    out = subprocess.run(
        [sys.executable, "-c",
         "import sys, runpy; sys.argv = sys.argv[1:];"
         "runpy.run_module('recbole_models.run', run_name='__main__', alter_sys=True)",
         "run", "--model", "MLLMRec", "--dataset", "tiny", "--config_files", config_file,
         "--epochs=1", "--embedding_size=4"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test result:" in out.stdout
    # The override reached the model: the towers of the saved checkpoint end in 4 units.
    saved = os.path.join(os.path.dirname(config_file), "saved")
    (checkpoint,) = [os.path.join(saved, f) for f in os.listdir(saved) if f.endswith(".pth")]
    state = torch.load(checkpoint, weights_only=True)
    assert state["config"]["embedding_size"] == 4 and state["config"]["epochs"] == 1
    assert state["state_dict"]["item_tower.2.weight"].shape[0] == 4
    check = subprocess.run(
        [sys.executable, "-c", "import sys, recbole_models.run, recbole_models.compare;"
                               "print('recbole.quick_start' in sys.modules, 'ray' in sys.modules)"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert check.stdout.strip() == "False False"


def test_scipy_dok_compat_matches_item_assignment():
    import scipy.sparse as sp

    import recbole_models  # noqa: F401  (applies the shim)

    data = {(0, 1): 2.0, (2, 0): 1.5, (1, 1): -1.0}
    a = sp.dok_matrix((3, 3), dtype=np.float32)
    a._update(data)
    b = sp.dok_matrix((3, 3), dtype=np.float32)
    for (i, j), v in data.items():
        b[i, j] = v
    assert (a.tocsr() != b.tocsr()).nnz == 0


def test_ui_gcn_matches_the_reference_formula(tiny):
    config_file, *_ = tiny
    _, _, train, model = build(config_file, {"n_ui_layers": 1})
    model.eval()
    with torch.no_grad():
        e_u, e_i = model._all_outputs()
        users = torch.arange(model.n_users)
        base = torch.cat([model.user_tower(model.user_x[users]), model.item_tower(model.item_h)])
        n = model.n_users + model.n_items
        inter = train._dataset.inter_matrix(form="coo")
        a = torch.zeros(n, n)
        a[inter.row, inter.col + model.n_users] = 1.0
        a[inter.col + model.n_users, inter.row] = 1.0
        deg = a.sum(1)
        d = torch.where(deg > 0, deg.pow(-0.5), torch.zeros_like(deg))
        a_hat = d[:, None] * a * d[None, :]
        unit = torch.nn.functional.normalize(base, dim=-1)
        expected = base + unit + a_hat @ unit
    torch.testing.assert_close(torch.cat([e_u, e_i]), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["MLLMRec", "MLLMRec +UI-GCN"])
def test_training_step_is_bitwise_reproducible(tmp_path, name):
    # Big enough batches for CPU kernels to split work across threads: the backward of
    # ``t[idx]`` with repeated ids then sums in a varying order (it did before).
    config_file, *_ = write_tiny_dataset(str(tmp_path), n_users=1500, n_items=400, per_user=12, dim=32)
    model_name, overrides = resolve(name, load_variants())
    config, dataset, train, model = build(config_file, dict(overrides, train_batch_size=4096), model_name)
    batch = next(iter(train))
    grads = []
    for _ in range(4):
        model.zero_grad()
        model.calculate_loss(batch).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))
