"""Tiny pre-split RecBole datasets with feature files, written by the tests."""
import os

import numpy as np
import torch
import yaml

from recbole_models.features import write_feature_file

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_tiny_dataset(root, name="tiny", n_users=30, n_items=40, per_user=8, dim=16, seed=0):
    """Writes ``root/name/`` (train/valid/test ``.inter``, ``.itememb``, ``.useremb``) and
    ``root/name.yaml``; returns ``(config_file, dataset_dir, user_tokens, item_tokens)``.

    Tokens are strings unlike RecBole's internal ids (``u7``, ``i12``) so that a test
    mixing them up fails. Each user has ``per_user`` items: all but two in train, then
    one valid and one test item.
    """
    rng = np.random.default_rng(seed)
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    users = [f"u{u}" for u in range(n_users)]
    items = [f"i{i}" for i in range(n_items)]
    parts = {"train": [], "valid": [], "test": []}
    for u in users:
        chosen = rng.choice(n_items, size=per_user, replace=False)
        for pos, i in enumerate(chosen):
            split = "train" if pos < per_user - 2 else ("valid" if pos == per_user - 2 else "test")
            parts[split].append(f"{u}\t{items[i]}\t{1 + pos % 5}\t{1000 + pos}\n")
    for split, rows in parts.items():
        with open(os.path.join(d, f"{name}.{split}.inter"), "w") as f:
            f.write(HEADER + "".join(rows))
    # Only items that occur in an .inter file exist for RecBole.
    seen = sorted({row.split("\t")[1] for rows in parts.values() for row in rows}, key=lambda t: int(t[1:]))
    write_feature_file(os.path.join(d, f"{name}.itememb"), "iid", "item_emb", seen,
                       rng.normal(size=(len(seen), dim)))
    write_feature_file(os.path.join(d, f"{name}.useremb"), "uid", "user_emb", users,
                       rng.normal(size=(n_users, dim)))
    config = {
        "data_path": root, "benchmark_filename": ["train", "valid", "test"],
        "load_col": {"inter": ["user_id", "item_id"], "itememb": ["iid", "item_emb"],
                     "useremb": ["uid", "user_emb"]},
        "additional_feat_suffix": ["itememb", "useremb"],
        "alias_of_item_id": ["iid"], "alias_of_user_id": ["uid"],
        "preload_weight": {"iid": "item_emb", "uid": "user_emb"},
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"},
        "metrics": ["Recall", "NDCG"], "topk": [10, 20], "valid_metric": "Recall@20",
        "epochs": 1, "train_batch_size": 64, "eval_batch_size": 256, "show_progress": False,
        "checkpoint_dir": os.path.join(root, "saved"), "log_wandb": False, "state": "WARNING",
        "embedding_size": 8, "hidden_size": 16, "knn_k": 3, "knn_threshold": 0.0, "cooc_k": 3,
    }
    path = os.path.join(root, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path, d, users, seen


def write_tiny_multimodal_dataset(root, name="tinymm", modalities=("image", "text"), n_users=30,
                                  n_items=40, per_user=8, dims=None, seed=0):
    """Like :func:`write_tiny_dataset`, with one feature file per item modality
    (``<name>.<modality>emb``: ``<modality>_id:token <TAB> <modality>_emb:float_seq``)
    wired through the dataset key ``modalities``, and no user features.

    ``dims`` maps a modality to its feature size (default: image 32, text 16, others 8).
    Returns ``(config_file, dataset_dir, user_tokens, item_tokens)``.
    """
    config_file, d, users, seen = write_tiny_dataset(root, name, n_users, n_items, per_user, seed=seed)
    os.remove(os.path.join(d, f"{name}.itememb"))
    os.remove(os.path.join(d, f"{name}.useremb"))
    dims = dict({"image": 32, "text": 16}, **(dims or {}))
    rng = np.random.default_rng(seed + 1)
    with open(config_file) as f:
        config = yaml.safe_load(f)
    load_col = {"inter": ["user_id", "item_id"]}
    for m in modalities:
        write_feature_file(os.path.join(d, f"{name}.{m}emb"), f"{m}_id", f"{m}_emb", seen,
                           rng.normal(size=(len(seen), dims.get(m, 8))))
        load_col[f"{m}emb"] = [f"{m}_id", f"{m}_emb"]
    config.update({
        "load_col": load_col,
        "additional_feat_suffix": [f"{m}emb" for m in modalities],
        "alias_of_item_id": [f"{m}_id" for m in modalities],
        "preload_weight": {f"{m}_id": f"{m}_emb" for m in modalities},
        "modalities": {m: f"{m}_id" for m in modalities},
    })
    config.pop("alias_of_user_id", None)
    for key in ("embedding_size", "hidden_size", "knn_k", "knn_threshold", "cooc_k"):
        config.pop(key, None)
    with open(config_file, "w") as f:
        yaml.safe_dump(config, f)
    return config_file, d, users, seen


def build_model(model, config_file, dataset="tinymm", overrides=None):
    """``(config, dataset, train loader, model)`` the way ``recbole_models.run`` builds them:
    config, seed, dataset, splits, seed again, model on the training split."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_models import get_model
    from recbole_models.features import create_dataset
    from recbole_models.run import make_config

    config = make_config(model, dataset, [config_file], overrides)
    init_seed(config["seed"], config["reproducibility"])
    ds = create_dataset(config)
    train, _, _ = data_preparation(config, ds)
    init_seed(config["seed"], config["reproducibility"])
    return config, ds, train, get_model(model)(config, train._dataset)


def assert_gradients_bitwise_reproducible(model, batch, repeats=3, before_each=None):
    """Backward the same batch ``repeats`` times and require every parameter's gradient
    to be bitwise the same each time. ``before_each()`` runs before every pass (e.g. to
    reseed dropout or redo a per-epoch step)."""
    grads = []
    for _ in range(repeats):
        if before_each is not None:
            before_each()
        model.zero_grad()
        model.calculate_loss(batch).backward()
        grads.append([None if q.grad is None else q.grad.clone() for q in model.parameters()])
    for other in grads[1:]:
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(grads[0], other))


def assert_step_moves_every_parameter_reproducibly(build, config_file, before_loss=None):
    """Build the model twice (``build(config_file) -> (..., train, model)``), take one Adam
    step on the first batch each time: the loss is finite, every parameter moves, and the
    two builds end bitwise equal. ``before_loss()`` runs right before each loss (e.g. to
    seed the model's random draws)."""
    runs = []
    for _ in range(2):
        *_, train, model = build(config_file)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        if before_loss is not None:
            before_loss()
        loss = model.calculate_loss(next(iter(train)))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
        assert not unchanged
        runs.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for n in runs[0]:
        assert torch.equal(runs[0][n], runs[1][n]), n
