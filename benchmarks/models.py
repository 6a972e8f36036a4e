"""Seconds per training epoch, full-sort evaluation time and peak memory growth of
every model, on ml-100k and on a synthetic dataset of Amazon-Baby size.

Run:  python benchmarks/models.py [--datasets ml-100k baby] [--models VBPR FREEDOM ...]
                                  [--epochs 2] [--device cpu|cuda] [--threads N]

Data:
- ``ml-100k``: the shipped split (``data/ml-100k``) with its text modality
  (``ml-100k.itememb``, MiniLM; random 384-d rows when the file is absent) and user
  features (``ml-100k.useremb``, random when absent) for MLLMRec.
- ``baby``: 19,445 users, 7,050 items, 160,792 interactions with long-tail
  popularity (as in ``benchmarks/train_epoch.py``), two modalities: 4096-d image and
  384-d text features (clustered random), and 384-d user features for MLLMRec.

Every model runs in this one process, one after another, through RecBole's data
pipeline and trainer (``_train_epoch`` and ``evaluate``). The dataset is loaded once
per dataset (each model prepares a deep copy). Memory: on CPU the peak resident set size (sampled every 5 ms) above the
RSS measured right before the model is built; on CUDA ``torch.cuda.max_memory_allocated``
above the allocation before the model. Times are wall-clock means over ``--epochs``
epochs after one untimed warm-up epoch.
"""
import argparse
import copy
import gc
import os
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import torch

sys.argv = sys.argv[:1] + [a for a in sys.argv[1:] if not a.startswith("--") or "=" not in a]  # RecBole reads argv
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from recbole_models.features import write_feature_file  # noqa: E402
from benchmarks.synthetic import (BABY, clustered_features, write_long_tail_interactions,  # noqa: E402
                                  write_user_features)

DEFAULT_MODELS = ["MLLMRec", "VBPR", "LATTICE", "SLMRec", "FREEDOM", "LGMRec", "SMORE", "GUME", "SOIL",
                  "BPR", "LightGCN"]


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` is the highest value seen."""

    def __init__(self, interval=0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def __enter__(self):
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def baby_dataset(root, n_users=BABY["n_users"], n_items=BABY["n_items"], n_inter=BABY["n_inter"], seed=0):
    rng = np.random.default_rng(seed)
    name = "babymm"
    d = os.path.join(root, name)
    os.makedirs(d)
    rows, seen = write_long_tail_interactions(d, name, rng, n_users, n_items, n_inter, shuffle=False)
    for modality, dim in (("image", 4096), ("text", 384)):
        x = clustered_features(rng, n_items, dim)
        write_feature_file(os.path.join(d, f"{name}.{modality}emb"), f"{modality}_id", f"{modality}_emb",
                           seen, x[seen], fmt="%.4g")
    write_user_features(os.path.join(d, f"{name}.useremb"), rng, n_users, fmt="%.4g")
    cfg = {
        "data_path": root, "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"], "imageemb": ["image_id", "image_emb"],
                     "textemb": ["text_id", "text_emb"], "useremb": ["uid", "user_emb"]},
        "additional_feat_suffix": ["imageemb", "textemb", "useremb"],
        "alias_of_item_id": ["image_id", "text_id"], "alias_of_user_id": ["uid"],
        "preload_weight": {"image_id": "image_emb", "text_id": "text_emb", "uid": "user_emb"},
        "modalities": {"image": "image_id", "text": "text_id"},
        # MLLMRec reads one item feature field: the text modality here.
        "item_feature_field": "text_id", "user_feature_field": "uid",
    }
    return name, cfg, len(rows)


def ml100k_dataset(root):
    src = os.path.join(REPO, "data", "ml-100k")
    d = os.path.join(root, "ml-100k")
    os.makedirs(d)
    for split in ("train", "valid", "test"):
        os.symlink(os.path.join(src, f"ml-100k.{split}.inter"), os.path.join(d, f"ml-100k.{split}.inter"))
    rng = np.random.default_rng(0)
    items = sorted({line.split("\t")[1] for s in ("train", "valid", "test")
                    for line in list(open(os.path.join(src, f"ml-100k.{s}.inter")))[1:]}, key=int)
    users = sorted({line.split("\t")[0] for s in ("train", "valid", "test")
                    for line in list(open(os.path.join(src, f"ml-100k.{s}.inter")))[1:]}, key=int)
    real = os.path.join(src, "ml-100k.itememb")
    if os.path.isfile(real):
        os.symlink(real, os.path.join(d, "ml-100k.itememb"))
    else:
        write_feature_file(os.path.join(d, "ml-100k.itememb"), "iid", "item_emb", items,
                           rng.normal(size=(len(items), 384)))
    write_feature_file(os.path.join(d, "ml-100k.useremb"), "uid", "user_emb", users,
                       rng.normal(size=(len(users), 384)))
    cfg = {
        "data_path": root, "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"], "itememb": ["iid", "item_emb"], "useremb": ["uid", "user_emb"]},
        "additional_feat_suffix": ["itememb", "useremb"], "alias_of_item_id": ["iid"],
        "alias_of_user_id": ["uid"], "preload_weight": {"iid": "item_emb", "uid": "user_emb"},
        "modalities": {"text": "iid"},
    }
    return "ml-100k", cfg, None


COMMON = {
    "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
    "metrics": ["Recall", "NDCG"], "topk": [10, 20], "valid_metric": "Recall@20",
    "show_progress": False, "state": "ERROR", "eval_batch_size": 4096,
}


def bench_model(model_name, dataset_name, dataset, cfg, epochs, device):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_models import get_model
    from recbole_models.run import make_config
    from recbole_models.trainer import get_trainer

    config = make_config(model_name, dataset_name, None, dict(cfg, device=device, **COMMON))
    init_seed(config["seed"], config["reproducibility"])
    # data_preparation turns the dataset's frames into tensors in place: each model gets a copy.
    train, valid, _ = data_preparation(config, copy.deepcopy(dataset))
    gc.collect()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    with PeakRSS() as rss:
        base_rss = rss.peak
        t0 = time.perf_counter()
        model = get_model(model_name)(config, train._dataset).to(config["device"])
        build = time.perf_counter() - t0
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        trainer._train_epoch(train, 0, show_progress=False)  # warm-up
        times = []
        for epoch in range(1, epochs + 1):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            trainer._train_epoch(train, epoch, show_progress=False)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer.evaluate(valid, load_best_model=False, show_progress=False)
        if cuda:
            torch.cuda.synchronize()
        evaluate = time.perf_counter() - t0
    mem = ((torch.cuda.max_memory_allocated() - base_cuda) if cuda else (rss.peak - base_rss)) / 2 ** 20
    del trainer, model
    gc.collect()
    return {"build_s": build, "epoch_s": float(np.mean(times)), "eval_s": evaluate, "mem_mib": mem}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "baby"])
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from recbole_models import MODELS, get_model

    models = args.models or [m for m in DEFAULT_MODELS if m in MODELS or m in ("BPR", "LightGCN")]
    from recbole_models.features import create_dataset
    from recbole_models.run import make_config

    print(f"device {args.device}, torch threads {torch.get_num_threads()}, epochs timed {args.epochs}")
    with tempfile.TemporaryDirectory() as root:
        for ds in args.datasets:
            t0 = time.perf_counter()
            name, cfg, n = (baby_dataset(root) if ds == "baby" else ml100k_dataset(root))
            config = make_config("VBPR", name, None, dict(cfg, device=args.device, **COMMON))
            dataset = create_dataset(config)
            print(f"\n## {ds}: {dataset.user_num - 1} users, {dataset.item_num - 1} items, "
                  f"{dataset.inter_num} interactions (all splits); written and loaded in "
                  f"{time.perf_counter() - t0:.1f} s")
            print("| Model | build (s) | epoch (s) | full-sort eval (s) | peak memory growth (MiB) |")
            print("|---|---:|---:|---:|---:|")
            for m in models:
                try:
                    get_model(m)
                    r = bench_model(m, name, dataset, cfg, args.epochs, args.device)
                    print(f"| {m} | {r['build_s']:.2f} | {r['epoch_s']:.2f} | {r['eval_s']:.2f} | "
                          f"{r['mem_mib']:.0f} |", flush=True)
                except Exception as err:  # one model's failure must not hide the others' figures
                    print(f"| {m} | failed: {type(err).__name__}: {str(err).splitlines()[0][:120]} | | | |",
                          flush=True)
            del dataset


if __name__ == "__main__":
    main()
