"""Amazon 2014 reviews + metadata → k-core, split RecBole dataset, on fixture files written
here in the real formats (JSON-lines reviews, Python-literal metadata, plain and gzip)."""
import gzip
import json
import os
import random
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from mllmrec_pyg.cli import main as cli_main
from mllmrec_pyg.datasets.amazon import (dedup_interactions, k_core, prepare_amazon, read_meta,
                                         read_reviews)
from mllmrec_pyg.datasets.atomic import OutputExistsError
from mllmrec_pyg.datasets.split import mmrec_counts, mmrec_split, ratio_split


def write_amazon_fixture(root, n_users=80, n_items=40, seed=0, gzip_reviews=True, gzip_meta=False):
    """Writes ``reviews_Toy_5.json[.gz]`` and ``meta_Toy.json[.gz]`` in the 2014 formats; returns
    ``(reviews path, meta path, review dicts)``. Users review 3..14 items, so the 5-core
    filter has work to do; one (user, item) pair is reviewed twice, later."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    reviews = []
    for u in range(n_users):
        for i in rng.sample(range(n_items), rng.randint(3, 14)):
            reviews.append({"reviewerID": f"A{u:05d}X", "asin": f"B{i:08d}", "reviewerName": "Jo",
                            "helpful": [0, 0], "reviewText": "good\tthing", "overall": float(rng.randint(1, 5)),
                            "summary": "s", "unixReviewTime": 1300000000 + rng.randint(0, 10 ** 8),
                            "reviewTime": "01 1, 2013"})
    reviews.append(dict(reviews[0], overall=1.0, unixReviewTime=reviews[0]["unixReviewTime"] + 5))
    rpath = os.path.join(root, "reviews_Toy_5.json" + (".gz" if gzip_reviews else ""))
    opener = gzip.open if gzip_reviews else open
    with opener(rpath, "wt") as f:
        for r in reviews:
            f.write(json.dumps(r) + "\n")
    mpath = os.path.join(root, "meta_Toy.json" + (".gz" if gzip_meta else ""))
    opener = gzip.open if gzip_meta else open
    with opener(mpath, "wt") as f:
        for i in range(n_items):
            rec = {"asin": f"B{i:08d}", "title": f"Item's \"{i}\"\tname",
                   "categories": [["Toys", "Dolls"], ["Toys", "Gifts"]],
                   "imUrl": f"http://example.invalid/{i}.jpg", "price": 9.5 + i,
                   "salesRank": {"Toys": i}, "related": {"also_bought": ["B1"]}}
            if i % 3:
                rec["brand"] = "Acme"
            if i % 4:
                rec["description"] = "Line one.\nLine two."
            f.write(repr(rec) + "\n")  # Python literal: single quotes, not JSON
    return rpath, mpath, reviews


def reference_k_core(pairs, k):
    """Plain-Python iterated k-core over a set of (user, item) pairs."""
    pairs = set(pairs)
    while True:
        uc = Counter(u for u, _ in pairs)
        ic = Counter(i for _, i in pairs)
        kept = {(u, i) for u, i in pairs if uc[u] >= k and ic[i] >= k}
        if kept == pairs:
            return pairs
        pairs = kept


def read_inter(path):
    frame = pd.read_csv(path, sep="\t", dtype=str)
    assert list(frame.columns) == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    frame.columns = ["user", "item", "rating", "timestamp"]
    return frame


def test_k_core_iterates_until_stable():
    # Round 1 drops item c (1 user); then u3 has a single item left and goes in round 2.
    frame = pd.DataFrame({"user": ["u1", "u1", "u2", "u2", "u3", "u3"],
                          "item": ["a", "b", "a", "b", "b", "c"]})
    out, rounds = k_core(frame, 2)
    assert rounds == 2
    assert set(zip(out["user"], out["item"])) == {("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")}
    assert k_core(frame, 1)[0].shape[0] == 6
    with pytest.raises(ValueError, match="k must be an int"):
        k_core(frame, -1)


def test_dedup_keeps_earliest_review():
    frame = pd.DataFrame({"user": ["u", "u", "v"], "item": ["a", "a", "a"], "rating": [1.0, 5.0, 3.0],
                          "timestamp": [20, 10, 30], "line": [1, 2, 3]})
    out, dropped = dedup_interactions(frame)
    assert dropped == 1
    assert out[out.user == "u"]["rating"].tolist() == [5.0]


def test_prepare_matches_reference_and_mmrec_rule(tmp_path):
    rpath, mpath, reviews = write_amazon_fixture(tmp_path / "raw")
    out = tmp_path / "data" / "toy"
    summary = prepare_amazon(str(rpath), str(out), meta=str(mpath), k=5, seed=7)

    expected = reference_k_core({(r["reviewerID"], r["asin"]) for r in reviews}, 5)
    users = {u for u, _ in expected}
    items = {i for _, i in expected}
    assert (summary["users"], summary["items"], summary["interactions"]) == (len(users), len(items), len(expected))
    assert summary["duplicates_collapsed"] == 1
    assert summary["density"] == pytest.approx(len(expected) / (len(users) * len(items)))
    assert len(expected) < len(reviews) - 1  # the filter did remove rows

    full = read_inter(out / "toy.inter")
    parts = {s: read_inter(out / f"toy.{s}.inter") for s in ("train", "valid", "test")}
    assert sum(len(p) for p in parts.values()) == len(full) == len(expected)
    merged = pd.concat(parts.values())
    assert set(zip(merged.user, merged.item)) == set(zip(full.user, full.item))
    # Tokens are 0..n-1, and the mapping files lead back to the original ids.
    umap = pd.read_csv(out / "u_id_mapping.csv", sep="\t", dtype=str)
    imap = pd.read_csv(out / "i_id_mapping.csv", sep="\t", dtype=str)
    u_orig = dict(zip(umap.userID, umap.user_id))
    i_orig = dict(zip(imap.itemID, imap.asin))
    assert {(u_orig[u], i_orig[i]) for u, i in zip(full.user, full.item)} == expected
    assert sorted(map(int, set(full.user))) == list(range(len(users)))
    # The collapsed duplicate kept its first (earlier) review's rating and time.
    first = reviews[0]
    row = full[(full.user.map(u_orig) == first["reviewerID"]) & (full.item.map(i_orig) == first["asin"])]
    if len(row):
        assert float(row.rating.iloc[0]) == first["overall"]
        assert int(row.timestamp.iloc[0]) == first["unixReviewTime"]

    # MMRec's per-user counts: (n-2, 1, 1) below 10, else int(0.2 n) held out.
    n = full.groupby("user").size()
    for split, label in (("train", 0), ("valid", 1), ("test", 2)):
        got = parts[split].groupby("user").size().reindex(n.index, fill_value=0)
        want = pd.Series(mmrec_counts(n.to_numpy())[label], index=n.index)
        assert (got == want).all(), split

    # Same seed → same files; another seed → another split.
    again = tmp_path / "data2" / "toy"
    prepare_amazon(str(rpath), str(again), meta=str(mpath), k=5, seed=7)
    assert (again / "toy.test.inter").read_text() == (out / "toy.test.inter").read_text()
    other = tmp_path / "data3" / "toy"
    prepare_amazon(str(rpath), str(other), meta=str(mpath), k=5, seed=8)
    assert (other / "toy.test.inter").read_text() != (out / "toy.test.inter").read_text()

    item = pd.read_csv(out / "toy.item", sep="\t", dtype=str, keep_default_na=False, quoting=3)
    assert list(item.columns)[:3] == ["item_id:token", "asin:token", "title:token_seq"]
    first_item = item.iloc[0]
    asin = first_item["asin:token"]
    number = int(asin[1:])
    assert first_item["title:token_seq"] == f"Item's \"{number}\" name"  # tab collapsed, quotes kept
    assert first_item["categories:token_seq"] == "Toys, Dolls, Gifts"
    assert first_item["image_url:token"] == f"http://example.invalid/{number}.jpg"
    assert float(first_item["price:float"]) == 9.5 + number
    assert first_item["description:token_seq"] == ("Line one. Line two." if number % 4 else "")
    info = json.loads((out / "dataset.json").read_text())
    assert info["split"]["seed"] == 7 and info["users"] == len(users)


def test_yaml_is_a_recbole_config(tmp_path):
    import yaml

    rpath, mpath, _ = write_amazon_fixture(tmp_path / "raw")
    out = tmp_path / "toy"
    prepare_amazon(str(rpath), str(out), meta=str(mpath))
    config = yaml.safe_load((out / "toy.yaml").read_text())
    assert config["data_path"] == str(tmp_path)
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["load_col"] == {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    assert config["eval_args"]["mode"] == "full" and config["valid_metric"] == "Recall@20"
    assert config["topk"] == [10, 20] and config["metrics"] == ["Recall", "NDCG"]
    full = yaml.safe_load((out / "toy.mllmrec.yaml").read_text())
    assert full["preload_weight"] == {"iid": "item_emb", "uid": "user_emb"}
    assert full["additional_feat_suffix"] == ["itememb", "useremb"]


def test_paper_graph_settings_by_name(tmp_path):
    import yaml

    rpath, mpath, _ = write_amazon_fixture(tmp_path / "raw")
    prepare_amazon(str(rpath), str(tmp_path / "baby"), meta=str(mpath))
    config = yaml.safe_load((tmp_path / "baby" / "baby.mllmrec.yaml").read_text())
    assert (config["knn_threshold"], config["cooc_k"]) == (0.7, 10)


def test_plain_gzip_and_csv_inputs_agree(tmp_path):
    gz, _, reviews = write_amazon_fixture(tmp_path / "a", gzip_reviews=True, gzip_meta=True)
    plain, _, _ = write_amazon_fixture(tmp_path / "b", gzip_reviews=False)
    a, b = read_reviews(str(gz)), read_reviews(str(plain))
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == len(reviews)
    csv_path = tmp_path / "ratings_Toy.csv"
    with open(csv_path, "w") as f:
        for r in reviews:
            f.write(f"{r['reviewerID']},{r['asin']},{r['overall']},{r['unixReviewTime']}\n")
    c = read_reviews(str(csv_path))
    pd.testing.assert_frame_equal(a.drop(columns="line"), c.drop(columns="line"))
    meta = read_meta(str(tmp_path / "a" / "meta_Toy.json.gz"), items={"B00000004"})
    assert list(meta) == ["B00000004"] and meta["B00000004"]["brand"] == "Acme"


def test_meta_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "meta.json"
    path.write_text("{'asin': 'B1', 'title': 'ok'}\n"
                    f"{{'asin': 'B2', 'title': open({str(marker)!r}, 'w').write('x')}}\n")
    with pytest.raises(ValueError, match=r"meta.json, line 2"):
        read_meta(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("line, message", [
    ('{"reviewerID": "A1", "asin": "B1", "overall": 5.0', "line 3: not a JSON object"),
    ('{"reviewerID": "A1", "asin": "B1", "overall": 5.0}', r"line 3: missing field\(s\) \['unixReviewTime'\]"),
    ('{"reviewerID": "A1", "asin": "B1", "overall": "five", "unixReviewTime": 1}', "line 3: .*must be numbers"),
    ('["A1", "B1"]', "line 3: expected an object"),
])
def test_bad_review_lines_name_file_and_line(tmp_path, line, message):
    good = json.dumps({"reviewerID": "A0", "asin": "B0", "overall": 4.0, "unixReviewTime": 1})
    path = tmp_path / "reviews.json"
    path.write_text(good + "\n" + good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=f"reviews.json, {message}"):
        read_reviews(str(path))


def test_empty_result_and_occupied_output_leave_nothing_behind(tmp_path):
    rpath, mpath, _ = write_amazon_fixture(tmp_path / "raw")
    parent = tmp_path / "data"
    parent.mkdir()
    with pytest.raises(ValueError, match="no interaction is left after the 50-core"):
        prepare_amazon(str(rpath), str(parent / "toy"), meta=str(mpath), k=50)
    assert os.listdir(parent) == []  # no dataset, no temporary directory

    other = parent / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="already holds other data"):
        prepare_amazon(str(rpath), str(other), meta=str(mpath), overwrite=True)
    assert os.listdir(other) == ["notes.txt"] and sorted(os.listdir(parent)) == ["mine"]

    out = parent / "toy"
    prepare_amazon(str(rpath), str(out), meta=str(mpath), seed=1)
    with pytest.raises(OutputExistsError, match="pass overwrite"):
        prepare_amazon(str(rpath), str(out), meta=str(mpath), seed=2)
    assert json.loads((out / "dataset.json").read_text())["split"]["seed"] == 1
    prepare_amazon(str(rpath), str(out), meta=str(mpath), seed=2, overwrite=True)
    assert json.loads((out / "dataset.json").read_text())["split"]["seed"] == 2
    assert sorted(os.listdir(parent)) == ["mine", "toy"]

    # A bad metadata line (found after the reviews were read) leaves nothing either.
    bad_meta = tmp_path / "bad_meta.json"
    bad_meta.write_text("{'asin': 'B1'}\nnot a literal\n")
    with pytest.raises(ValueError, match="bad_meta.json, line 2"):
        prepare_amazon(str(rpath), str(parent / "toy2"), meta=str(bad_meta))
    assert sorted(os.listdir(parent)) == ["mine", "toy"]


def test_mmrec_split_rule_and_small_users():
    users = np.repeat(np.arange(4), [3, 9, 10, 25])
    labels = mmrec_split(users, seed=0)
    for u, (tr, va, te) in zip(range(4), [(1, 1, 1), (7, 1, 1), (8, 1, 1), (20, 2, 3)]):
        got = np.bincount(labels[users == u], minlength=3)
        assert tuple(got) == (tr, va, te)
    assert not np.array_equal(mmrec_split(users, seed=0), mmrec_split(users, seed=1))
    with pytest.raises(ValueError, match="fewer than 3 interactions"):
        mmrec_split(np.array([0, 0, 1, 1, 1]))


def test_ratio_split_matches_recbole_counts_and_time_order():
    from recbole.data.dataset import Dataset

    users = np.repeat(np.arange(5), [1, 2, 7, 10, 33])
    times = np.arange(len(users))[::-1]  # later rows are older
    labels = ratio_split(users, times, ratios=(0.8, 0.1, 0.1), order="TO")
    for u in range(5):
        n = int((users == u).sum())
        ids = Dataset._calcu_split_ids(None, tot=n, ratios=[0.8, 0.1, 0.1])
        want = np.diff([0] + list(ids) + [n])
        assert tuple(np.bincount(labels[users == u], minlength=3)) == tuple(want)
        # TO: test rows are the user's latest ones.
        mine = labels[users == u]
        if (mine == 2).any() and (mine == 0).any():
            assert times[users == u][mine == 2].min() > times[users == u][mine == 0].max()
    with pytest.raises(ValueError, match="order must be"):
        ratio_split(users, times, order="XX")


def test_cli_prepare_amazon_prints_counts(tmp_path, capsys):
    rpath, mpath, reviews = write_amazon_fixture(tmp_path / "raw")
    expected = reference_k_core({(r["reviewerID"], r["asin"]) for r in reviews}, 5)
    out = tmp_path / "toy"
    code = cli_main(["prepare", "amazon", "--reviews", str(rpath), "--meta", str(mpath), "--out", str(out),
                     "--split", "ratio", "--order", "TO", "--seed", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    users = len({u for u, _ in expected})
    assert f"{users:,} users" in printed and f"{len(expected):,} interactions" in printed
    assert "density" in printed
    assert json.loads((out / "dataset.json").read_text())["split"]["order"] == "TO"
    # Bad input: one clear line and exit status 2, no traceback.
    code = cli_main(["prepare", "amazon", "--reviews", str(tmp_path / "nope.json.gz"), "--out",
                     str(tmp_path / "x")])
    assert code == 2
    assert "nope.json.gz: no such file" in capsys.readouterr().err
    assert cli_main(["prepare", "amazon", "--reviews", str(rpath), "--out", str(out)]) == 2
    assert "already holds a prepared dataset" in capsys.readouterr().err


def test_cli_prepare_movielens(tmp_path, capsys):
    out = tmp_path / "ml-100k"
    assert cli_main(["prepare", "movielens", "--out", str(out), "--seed", "5"]) == 0
    assert "943 users, 1682 items, 100000 interactions" in capsys.readouterr().out
    assert json.loads((out / "split.json").read_text())["seed"] == 5
    assert cli_main(["prepare", "movielens", "--out", str(out)]) == 2  # refuses to replace the split
    assert "--overwrite" in capsys.readouterr().err


def test_relative_out_gives_relative_data_path(tmp_path, monkeypatch):
    import yaml

    rpath, mpath, _ = write_amazon_fixture(tmp_path / "raw")
    monkeypatch.chdir(tmp_path)
    prepare_amazon(str(rpath), "data/toy", meta=str(mpath))
    config = yaml.safe_load(open("data/toy/toy.yaml"))
    assert config["data_path"] == "data/"
    assert os.path.isfile(os.path.join(config["data_path"], "toy", "toy.train.inter"))


def test_bad_csv_and_truncated_gzip(tmp_path):
    path = tmp_path / "ratings_X.csv"
    path.write_text("A1,B1,5.0,100\nA2,B1,4.0\n")
    with pytest.raises(ValueError, match=r"ratings_X.csv, line 2: expected 4 comma-separated columns"):
        read_reviews(str(path))
    rpath, _, _ = write_amazon_fixture(tmp_path / "raw")
    data = open(rpath, "rb").read()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.json.gz, line \d+: cannot read"):
        read_reviews(str(cut))
    empty = tmp_path / "empty.json"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.json: no reviews"):
        read_reviews(str(empty))
