"""MMRec layout in and out, on an MMRec-format fixture written here; and the acceptance
check: RecBole (our runner) trains on a prepared Amazon fixture and on an imported
MMRec fixture."""
import os

import numpy as np
import pandas as pd
import pytest
import yaml

from mllmrec_pyg.cli import main as cli_main
from mllmrec_pyg.datasets.mmrec import export_mmrec, import_mmrec, read_feature_file
from recbole_models.features import write_feature_file


def write_mmrec_fixture(root, name="toymm", n_users=40, n_items=30, seed=0, dim=16):
    """Writes an MMRec directory: ``<name>.inter`` (userID itemID rating timestamp x_label),
    the four ``*_feat.npy`` row-aligned to the ids and ``i_id_mapping.csv``; returns the
    arrays by file name and the interaction frame."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=int(rng.integers(5, 12)), replace=False)
        labels = [0] * (len(items) - 2) + [1, 2]
        for i, label in zip(items, labels):
            rows.append((u, int(i), float(rng.integers(1, 6)), 1300000000 + int(rng.integers(0, 10 ** 8)), label))
    frame = pd.DataFrame(rows, columns=["userID", "itemID", "rating", "timestamp", "x_label"])
    frame.to_csv(os.path.join(root, f"{name}.inter"), sep="\t", index=False)
    arrays = {
        "text_feat.npy": rng.normal(size=(n_items, dim)).astype(np.float32),
        "image_feat.npy": rng.normal(size=(n_items, 8)).astype(np.float32),
        "image_text_feat.npy": rng.normal(size=(n_items, dim)).astype(np.float32),
        "user_preferences_feat.npy": rng.normal(size=(n_users, dim)).astype(np.float32),
    }
    for fname, array in arrays.items():
        np.save(os.path.join(root, fname), array)
    pd.DataFrame({"asin": [f"B{i:05d}" for i in range(n_items)], "itemID": range(n_items)}).to_csv(
        os.path.join(root, "i_id_mapping.csv"), sep="\t", index=False)
    return arrays, frame


def test_import_writes_split_and_aligned_features(tmp_path):
    arrays, frame = write_mmrec_fixture(tmp_path / "src")
    out = tmp_path / "data" / "toymm"
    summary = import_mmrec(str(tmp_path / "src"), str(out))
    assert summary["interactions"] == len(frame)
    for label, split in enumerate(("train", "valid", "test")):
        part = pd.read_csv(out / f"toymm.{split}.inter", sep="\t")
        want = frame[frame.x_label == label]
        assert sorted(zip(part["user_id:token"], part["item_id:token"])) == sorted(zip(want.userID, want.itemID))
    # Row r of the .npy is token "r" in the feature file.
    for fname, suffix in (("image_text_feat.npy", "imagetextemb"), ("text_feat.npy", "textemb"),
                          ("image_feat.npy", "imageemb"), ("user_preferences_feat.npy", "useremb")):
        tokens, values = read_feature_file(str(out / f"toymm.{suffix}"))
        np.testing.assert_allclose(values, arrays[fname][[int(t) for t in tokens]], rtol=1e-6)
    config = yaml.safe_load((out / "toymm.yaml").read_text())
    assert config["additional_feat_suffix"] == ["imagetextemb", "useremb"]
    assert config["item_feature_field"] == "imgtext_iid" and config["user_feature_field"] == "uid"
    item = pd.read_csv(out / "toymm.item", sep="\t", dtype=str)
    assert item.set_index("item_id:token").loc["3", "asin:token"] == "B00003"

    # --item-features picks another file for the YAML.
    out2 = tmp_path / "data" / "toymm2"
    assert cli_main(["mmrec", "import", str(tmp_path / "src"), "--out", str(out2), "--inter-file",
                     str(tmp_path / "src" / "toymm.inter"), "--item-features", "text_feat.npy"]) == 0
    config = yaml.safe_load((out2 / "toymm2.yaml").read_text())
    assert config["preload_weight"] == {"text_iid": "text_emb", "uid": "user_emb"}


def test_round_trip_import_export(tmp_path):
    arrays, frame = write_mmrec_fixture(tmp_path / "src")
    ours = tmp_path / "data" / "toymm"
    import_mmrec(str(tmp_path / "src"), str(ours))
    back = tmp_path / "back"
    assert cli_main(["mmrec", "export", str(ours), "--out", str(back)]) == 0
    again = pd.read_csv(back / "toymm.inter", sep="\t")
    assert list(again.columns) == ["userID", "itemID", "rating", "timestamp", "x_label"]
    key = ["userID", "itemID"]
    pd.testing.assert_frame_equal(again.sort_values(key).reset_index(drop=True),
                                  frame.sort_values(key).reset_index(drop=True), check_dtype=False)
    for fname, array in arrays.items():
        np.testing.assert_allclose(np.load(back / fname), array, rtol=1e-6)
    assert "inter_file_name: toymm.inter" in (back / "mmrec_dataset.yaml").read_text()


def test_export_reindexes_string_tokens(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    rows = {"train": ["ua\tix\t5\t10", "ua\tiy\t4\t11", "ub\tiy\t3\t12"], "valid": ["ua\tiz\t1\t13"],
            "test": ["ub\tix\t2\t14"]}
    for split, lines in rows.items():
        (d / f"tiny.{split}.inter").write_text(header + "\n".join(lines) + "\n")
    write_feature_file(str(d / "tiny.itememb"), "iid", "item_emb", ["iz", "ix", "iy"],
                       np.array([[3.0, 3.0], [1.0, 1.0], [2.0, 2.0]]))
    write_feature_file(str(d / "tiny.useremb"), "uid", "user_emb", ["ub", "ua"], np.array([[2.0], [1.0]]))
    summary = export_mmrec(str(d), str(tmp_path / "mm"))
    assert summary["ids"]["items"].startswith("re-indexed")
    imap = pd.read_csv(tmp_path / "mm" / "i_id_mapping.csv", sep="\t")
    assert dict(zip(imap.asin, imap.itemID)) == {"ix": 0, "iy": 1, "iz": 2}
    np.testing.assert_array_equal(np.load(tmp_path / "mm" / "image_text_feat.npy"),
                                  [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    np.testing.assert_array_equal(np.load(tmp_path / "mm" / "user_preferences_feat.npy"), [[1.0], [2.0]])
    inter = pd.read_csv(tmp_path / "mm" / "tiny.inter", sep="\t")
    assert inter[inter.x_label == 2][["userID", "itemID"]].values.tolist() == [[1, 0]]

    # A feature file missing an item is refused, and nothing is written.
    write_feature_file(str(d / "tiny.itememb"), "iid", "item_emb", ["ix", "iy"], np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"tiny.itememb: no row for 1 item"):
        export_mmrec(str(d), str(tmp_path / "mm2"))
    assert not (tmp_path / "mm2").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("x_label", "x_label\tcolour", 1).replace("\n", "\tred\n"), r"unknown column\(s\) \['colour'"),
    (lambda t: t.replace("\tx_label", "", 1), r"missing column\(s\) \['x_label'\]"),
    (lambda t: t.replace("\n0\t", "\nzero\t", 1), r"toymm.inter, line 2: column 'userID' must be a non-negative"),
    (lambda t: "\n".join(l if i != 3 else l[:-1] + "7" for i, l in enumerate(t.split("\n"))), "line 4: x_label must be 0, 1 or 2"),
])
def test_bad_mmrec_inter(tmp_path, edit, message):
    write_mmrec_fixture(tmp_path / "src")
    path = tmp_path / "src" / "toymm.inter"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ValueError, match=message):
        import_mmrec(str(tmp_path / "src"), str(tmp_path / "toymm"))
    assert not (tmp_path / "toymm").exists()


def test_bad_feature_arrays(tmp_path):
    arrays, _ = write_mmrec_fixture(tmp_path / "src")
    np.save(tmp_path / "src" / "text_feat.npy", arrays["text_feat.npy"][:10])
    with pytest.raises(ValueError, match=r"text_feat.npy: 10 rows, but the .inter file has itemID"):
        import_mmrec(str(tmp_path / "src"), str(tmp_path / "toymm"))
    bad = arrays["text_feat.npy"].copy()
    bad[4, 0] = np.nan
    np.save(tmp_path / "src" / "text_feat.npy", bad)
    with pytest.raises(ValueError, match=r"row 4 \(itemID 4\) has NaN"):
        import_mmrec(str(tmp_path / "src"), str(tmp_path / "toymm"))
    np.save(tmp_path / "src" / "text_feat.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a numeric .npy array"):
        import_mmrec(str(tmp_path / "src"), str(tmp_path / "toymm"))
    assert not (tmp_path / "toymm").exists()


def _train(model, name, config_file, tmp_path, **extra):
    import torch
    from recbole_models.run import run

    torch.set_num_threads(1)
    config = {"epochs": 1, "checkpoint_dir": str(tmp_path / "saved"), "show_progress": False,
              "state": "WARNING", "train_batch_size": 256, "eval_batch_size": 4096, **extra}
    return run(model, name, [str(config_file)], config_dict=config)


def test_recbole_trains_on_prepared_and_imported_data(tmp_path):
    from test_datasets_amazon import write_amazon_fixture
    from mllmrec_pyg.datasets.amazon import prepare_amazon

    rpath, mpath, _ = write_amazon_fixture(tmp_path / "raw")
    prepare_amazon(str(rpath), str(tmp_path / "data" / "toy"), meta=str(mpath))
    write_mmrec_fixture(tmp_path / "src")
    import_mmrec(str(tmp_path / "src"), str(tmp_path / "data" / "toymm"))
    for name in ("toy", "toymm"):
        result = _train("BPR", name, tmp_path / "data" / name / f"{name}.yaml", tmp_path)
        assert set(result["test_result"]) == {"recall@10", "recall@20", "ndcg@10", "ndcg@20"}
        assert 0.0 <= result["test_result"]["recall@20"] <= 1.0
    # MLLMRec on the imported features (image_text_feat.npy items, preference users).
    result = _train("MLLMRec", "toymm", tmp_path / "data" / "toymm" / "toymm.yaml", tmp_path,
                    embedding_size=8, hidden_size=16, knn_k=3, cooc_k=3)
    assert "recall@20" in result["test_result"]


def test_export_of_a_prepared_amazon_dataset_keeps_ids_and_split(tmp_path):
    from test_datasets_amazon import write_amazon_fixture
    from mllmrec_pyg.datasets.amazon import prepare_amazon

    rpath, mpath, _ = write_amazon_fixture(tmp_path / "raw")
    ours = tmp_path / "data" / "toy"
    prepare_amazon(str(rpath), str(ours), meta=str(mpath))
    summary = export_mmrec(str(ours), str(tmp_path / "mm" / "toy"))
    assert summary["ids"] == {"users": "kept", "items": "kept"} and summary["features"] == {}
    inter = pd.read_csv(tmp_path / "mm" / "toy" / "toy.inter", sep="\t")
    for label, split in enumerate(("train", "valid", "test")):
        part = pd.read_csv(ours / f"toy.{split}.inter", sep="\t")
        mine = inter[inter.x_label == label]
        assert sorted(zip(part["user_id:token"], part["item_id:token"])) == sorted(zip(mine.userID, mine.itemID))
    assert (tmp_path / "mm" / "toy" / "i_id_mapping.csv").read_text() == (ours / "i_id_mapping.csv").read_text()
    # ... and the MMRec copy imports back to the same split files.
    back = tmp_path / "again" / "toy"
    import_mmrec(str(tmp_path / "mm" / "toy"), str(back))
    for split in ("train", "valid", "test"):
        a = pd.read_csv(ours / f"toy.{split}.inter", sep="\t").sort_values(["user_id:token", "item_id:token"])
        b = pd.read_csv(back / f"toy.{split}.inter", sep="\t").sort_values(["user_id:token", "item_id:token"])
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))
