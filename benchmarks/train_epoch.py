"""Training-epoch and full-sort evaluation time: our MLLMRec against a faithful
re-implementation of the reference forward, same process, same data, same batches.

The reference model recomputes, for EVERY batch, the item propagation
H = X + L X (a sparse product over the item graph) and runs both MLP towers over
EVERY user and item, then indexes the batch. Ours computes H once (it is a
constant of the data) and runs the towers on the batch's distinct ids only;
full-sort evaluation runs the item tower once per evaluation.

Run:  python benchmarks/train_epoch.py [--threads 2] [--epochs 2]
Data: ml-100k (data/ml-100k split files; MiniLM features when
``data/ml-100k/ml-100k.itememb`` exists, else random) and a synthetic dataset of
Amazon-Baby size (19,445 users, 7,050 items, 160,792 interactions, long-tail
popularity, clustered 384-d features), both through RecBole's data pipeline.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

sys.argv = sys.argv[:1] + [a for a in sys.argv[1:] if not a.startswith("--") or "=" not in a]  # RecBole reads argv
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from recbole_models.features import write_feature_file  # noqa: E402
from benchmarks.synthetic import (BABY, clustered_features, write_long_tail_interactions,  # noqa: E402
                                  write_user_features)


class ReferenceForward(nn.Module):
    """The reference model's training/eval computation, per batch."""

    def __init__(self, ours):
        super().__init__()
        self.x = ours.item_x_raw
        self.lap = ours.laplacian_sparse
        self.user_x = ours.user_x
        self.user_tower = ours.user_tower
        self.item_tower = ours.item_tower

    def all_outputs(self):
        h = self.x + torch.sparse.mm(self.lap, self.x)  # recomputed every call
        return self.user_tower(self.user_x), self.item_tower(h)

    def calculate_loss(self, inter, uid, iid, nid):
        e_u, e_i = self.all_outputs()
        u, p, n = e_u[inter[uid]], e_i[inter[iid]], e_i[inter[nid]]
        return -torch.nn.functional.logsigmoid((u * p).sum(-1) - (u * n).sum(-1)).mean()

    def full_sort_predict(self, users):
        e_u, e_i = self.all_outputs()
        return e_u[users] @ e_i.t()


def long_tail_dataset(root, n_users=BABY["n_users"], n_items=BABY["n_items"], n_inter=BABY["n_inter"],
                      dim=384, seed=0):
    rng = np.random.default_rng(seed)
    name = "babysize"
    d = os.path.join(root, name)
    os.makedirs(d)
    rows, seen_items = write_long_tail_interactions(d, name, rng, n_users, n_items, n_inter, shuffle=True)
    x = clustered_features(rng, n_items, dim)
    write_feature_file(os.path.join(d, f"{name}.itememb"), "iid", "item_emb", seen_items, x[seen_items])
    write_user_features(os.path.join(d, f"{name}.useremb"), rng, n_users, dim)
    return name, len(rows)


def config_dict(data_path):
    return {
        "data_path": data_path, "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"], "itememb": ["iid", "item_emb"], "useremb": ["uid", "user_emb"]},
        "additional_feat_suffix": ["itememb", "useremb"], "alias_of_item_id": ["iid"],
        "alias_of_user_id": ["uid"], "preload_weight": {"iid": "item_emb", "uid": "user_emb"},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [10, 20], "valid_metric": "Recall@20",
        "show_progress": False, "state": "ERROR", "knn_threshold": 0.5,
    }


def prepare(dataset, cfg):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_models.features import create_dataset
    from recbole_models.run import make_config

    config = make_config("MLLMRec", dataset, None, cfg)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train, valid, _ = data_preparation(config, data)
    from recbole_models import MLLMRec

    model = MLLMRec(config, train._dataset)
    # What the reference keeps: raw X and the normalised L as a torch sparse matrix.
    model.item_x_raw = torch.from_numpy(data.get_preload_weight("iid").astype(np.float32))[1:]
    inter = train._dataset.inter_matrix(form="coo")
    keep = inter.col > 0
    ui = torch.from_numpy(np.vstack([inter.row[keep], inter.col[keep] - 1]).astype(np.int64))
    from recbole_models.model.mllmrec import build_item_graph

    g = build_item_graph(model.item_x_raw, ui, model.n_users, model.knn_k, model.knn_threshold, model.cooc_k)
    n = model.item_x_raw.size(0)
    lap = torch.sparse_coo_tensor(g.edge_index.flip(0), g.edge_weight, (n, n)).coalesce()
    # Pad row/col 0 ([PAD]) so ids index the same way as ours.
    idx = lap.indices() + 1
    model.laplacian_sparse = torch.sparse_coo_tensor(idx, lap.values(), (n + 1, n + 1)).coalesce()
    model.item_x_raw = torch.cat([torch.zeros(1, model.item_x_raw.size(1)), model.item_x_raw])
    batches = list(train)
    eval_batches = [b[0] for b in valid]  # RecBole's full-sort batches (interaction only)
    return model, batches, eval_batches


def time_epoch(step_fn, params, batches, epochs):
    opt = torch.optim.Adam(params, lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in batches:
            opt.zero_grad()
            loss = step_fn(batch)
            loss.backward()
            opt.step()
    return (time.perf_counter() - start) / epochs


def time_eval(predict_fn, eval_batches, limit):
    """Seconds for one pass over RecBole's full-sort batches, extrapolated from the
    first ``limit`` batches when there are more (returned with a flag)."""
    todo = eval_batches[:limit]
    start = time.perf_counter()
    with torch.no_grad():
        for batch in todo:
            predict_fn(batch)
    elapsed = time.perf_counter() - start
    return elapsed * len(eval_batches) / len(todo), len(todo) < len(eval_batches)


def bench(label, dataset, cfg, epochs):
    model, batches, eval_batches = prepare(dataset, cfg)
    ref = ReferenceForward(model)
    uid, iid, nid = model.USER_ID, model.ITEM_ID, model.NEG_ITEM_ID
    params = list(model.user_tower.parameters()) + list(model.item_tower.parameters())
    model.train()
    t_ref = time_epoch(lambda b: ref.calculate_loss(b, uid, iid, nid), params, batches, epochs)
    t_ours = time_epoch(model.calculate_loss, params, batches, epochs)
    model.eval()

    e_ours, _ = time_eval(model.full_sort_predict, eval_batches, len(eval_batches))
    e_ref, extrapolated = time_eval(lambda b: ref.full_sort_predict(b[uid]), eval_batches, 200)
    with torch.no_grad():
        first = eval_batches[0]
        same = torch.allclose(model.full_sort_predict(first).view(len(first[uid]), -1),
                              ref.full_sort_predict(first[uid]), atol=1e-4, rtol=1e-4)
    print(f"{label}: {model.n_users - 1:,} users, {model.n_items - 1:,} items, "
          f"{len(batches)} training batches, {len(eval_batches)} full-sort batches per evaluation")
    print(f"  training epoch   reference {t_ref:8.3f} s   ours {t_ours:8.3f} s   speed-up {t_ref / t_ours:6.1f}x")
    print(f"  full-sort eval   reference {e_ref:8.3f} s{'*' if extrapolated else ' '}  ours {e_ours:8.3f} s"
          f"   speed-up {e_ref / e_ours:6.1f}x   (scores equal: {same})")
    if extrapolated:
        print("  * extrapolated from the first 200 batches")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    args, _ = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    root = tempfile.mkdtemp(prefix="bench-train-")
    try:
        ml = os.path.join(root, "ml-100k")
        os.makedirs(ml)
        for f in ("ml-100k.item", "ml-100k.train.inter", "ml-100k.valid.inter", "ml-100k.test.inter"):
            shutil.copy(os.path.join(REPO, "data", "ml-100k", f), ml)
        src = os.path.join(REPO, "data", "ml-100k")
        if os.path.isfile(os.path.join(src, "ml-100k.itememb")) and os.path.isfile(os.path.join(src, "ml-100k.useremb")):
            shutil.copy(os.path.join(src, "ml-100k.itememb"), ml)
            shutil.copy(os.path.join(src, "ml-100k.useremb"), ml)
            kind = "MiniLM features"
        else:
            from mllmrec_pyg.text.item_text import read_atomic

            rng = np.random.default_rng(0)
            items = list(read_atomic(os.path.join(ml, "ml-100k.item")).item_id)
            users = sorted({u for f in ("train", "valid", "test")
                            for u in read_atomic(os.path.join(ml, f"ml-100k.{f}.inter")).user_id}, key=int)
            write_feature_file(os.path.join(ml, "ml-100k.itememb"), "iid", "item_emb", items, rng.normal(size=(len(items), 384)))
            write_feature_file(os.path.join(ml, "ml-100k.useremb"), "uid", "user_emb", users, rng.normal(size=(len(users), 384)))
            kind = "random features"
        cfg = config_dict(root)
        cfg["load_col"]["inter"] = ["user_id", "item_id"]
        bench(f"ml-100k ({kind})", "ml-100k", cfg, args.epochs)
        name, n = long_tail_dataset(root)
        bench(f"Amazon-Baby size, synthetic ({n:,} interactions)", name, config_dict(root), args.epochs)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
