"""MovieLens-100k, the embedded default dataset, pre-split with RecBole's own splitter.

The recbole wheel ships ``dataset_example/ml-100k`` (943 users, 1,682 items,
100,000 ratings). :func:`prepare_movielens` splits it once, per user, with
RecBole's ``RS`` ratio split in random order (``order: RO``, ``group_by: user``)
under a fixed seed, and writes the three parts as atomic files named after the
output directory (``<name>`` = its base name, because RecBole reads
``<data_path>/<name>/<name>.<suffix>``; ``--out data/ml100k-s7`` gives ``ml100k-s7.*``)::

    <out>/<name>.item           item_id, movie_title, release_year, class (genres)
    <out>/<name>.train.inter    user_id, item_id, rating, timestamp
    <out>/<name>.valid.inter
    <out>/<name>.test.inter
    <out>/<name>.yaml           RecBole config of the split (as `prepare amazon` writes it)
    <out>/<name>.mllmrec.yaml   the same plus the feature files `mllmrec encode` writes
    <out>/split.json            seed, ratios, counts, RecBole version

Every later stage reads these files (RecBole through ``benchmark_filename``, the
reasoning stage through ``ml-100k.train.inter`` only), so the user histories
that reach an LLM cannot contain a validation or test interaction.
"""
import json
import os
import shutil
import tempfile
from typing import Dict, Sequence

import numpy as np

NAME = "ml-100k"
INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]


def recbole_ml100k_dir() -> str:
    """Directory of the MovieLens-100k atomic files inside the installed recbole wheel."""
    import recbole

    path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", NAME)
    if not os.path.isfile(os.path.join(path, f"{NAME}.inter")):
        raise FileNotFoundError(f"{path}: the recbole wheel has no {NAME} example dataset")
    return path


def _write_inter(path: str, dataset, part, original) -> int:
    """Writes the rows of ``part`` with their ORIGINAL rating and timestamp: RecBole keeps
    float fields in float32, which rounds 9-digit Unix times."""
    import pandas as pd

    uid, iid = dataset.uid_field, dataset.iid_field
    keys = pd.DataFrame({
        "user_id": dataset.id2token(uid, part.inter_feat[uid].numpy()),
        "item_id": dataset.id2token(iid, part.inter_feat[iid].numpy()),
    })
    rows = keys.merge(original, on=["user_id", "item_id"], how="left", validate="one_to_one")
    if rows["timestamp"].isna().any():
        raise ValueError(f"{path}: split rows not found in the source interactions")
    rows = rows.sort_values(["user_id", "timestamp", "item_id"],
                            key=lambda c: c.astype(np.int64) if c.name != "timestamp" else c)
    rows.columns = INTER_HEADER
    rows.to_csv(path, sep="\t", index=False)
    return len(rows)


def prepare_movielens(out_dir: str, seed: int = 2024,
                      ratios: Sequence[float] = (0.8, 0.1, 0.1), overwrite: bool = False) -> Dict:
    """Writes the pre-split MovieLens-100k into ``out_dir`` and returns the split summary.

    Args:
        out_dir: target directory; its base name is the dataset name (RecBole reads
            ``<data_path>/<dataset>/<dataset>.<suffix>``), and the files are named after it.
        seed: RecBole ``seed`` of the random order.
        ratios: train/valid/test ratios of each user's interactions (RecBole ``RS``).
        overwrite: replace an ``out_dir`` that already holds a split.
    """
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.utils import init_seed

    from mllmrec_pyg.datasets.atomic import dataset_name, recbole_config, write_yaml
    from mllmrec_pyg.text.decode import read_table

    name = dataset_name(out_dir)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    if os.path.exists(os.path.join(out_dir, "split.json")) and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a split (split.json); pass overwrite=True")
    src = recbole_ml100k_dir()
    work = tempfile.mkdtemp(prefix="ml100k-")
    stage = None
    try:
        config = Config(model="BPR", dataset=NAME, config_dict={
            "data_path": os.path.dirname(src), "checkpoint_dir": work, "seed": seed,
            "reproducibility": True, "show_progress": False, "state": "WARNING",
            "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
            "normalize_all": False,
            "eval_args": {"split": {"RS": list(ratios)}, "order": "RO", "group_by": "user", "mode": "full"},
        })
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        parts = dataset.build()
        # Write next to out_dir, then move into place: a crash leaves no half split.
        parent = os.path.dirname(os.path.abspath(out_dir)) or "."
        os.makedirs(parent, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=".ml100k-", dir=parent)
        original = read_table(os.path.join(src, f"{NAME}.inter"))
        original.columns = [c.split(":")[0] for c in original.columns]
        counts = {}
        for split, part in zip(("train", "valid", "test"), parts):
            counts[split] = _write_inter(os.path.join(stage, f"{name}.{split}.inter"), dataset, part, original)
        shutil.copyfile(os.path.join(src, f"{NAME}.item"), os.path.join(stage, f"{name}.item"))
        run = f"python -m recbole_models.run --model {{model}} --dataset {name} --config_files {{file}}"
        write_yaml(os.path.join(stage, f"{name}.yaml"), recbole_config(out_dir, seed),
                   comment=f"RecBole config of the pre-split MovieLens-100k `{name}` (mllmrec prepare movielens).\n"
                           + run.format(model="BPR", file=os.path.join(out_dir, name + ".yaml")))
        features = {"itememb": ("iid", "item_emb", "item"), "useremb": ("uid", "user_emb", "user")}
        write_yaml(os.path.join(stage, f"{name}.mllmrec.yaml"), recbole_config(out_dir, seed, features),
                   comment=f"{name}.yaml plus the feature files, which exist once `mllmrec encode {out_dir} "
                           f"--user-texts ...` wrote them.\n"
                           + run.format(model="MLLMRec", file=os.path.join(out_dir, name + ".mllmrec.yaml")))
        import recbole

        summary = {"dataset": name, "source": "recbole wheel dataset_example/ml-100k",
                   "recbole": recbole.__version__, "seed": seed, "ratios": list(ratios),
                   "order": "RO", "group_by": "user", "users": int(dataset.user_num - 1),
                   "items": int(dataset.item_num - 1), "interactions": counts}
        with open(os.path.join(stage, "split.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        os.makedirs(out_dir, exist_ok=True)
        for fname in os.listdir(stage):
            os.replace(os.path.join(stage, fname), os.path.join(out_dir, fname))
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
