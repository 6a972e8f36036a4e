"""The hyper-parameter grid: typed values, selection on validation only, the store,
the table and plots, and resuming after a real kill, on the tiny dataset."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from recbole_models.grid import aggregate, expand_grid, main as grid_main, markdown_table, run_grid, select_on_valid
from recbole_models.sweep import Point, ResultStore, check_typed, parse_value, point_key
from tests.recbole_data import write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_dataset(str(tmp_path))


def test_values_are_typed_and_strings_refused():
    assert parse_value("0.7", "x") == 0.7 and parse_value("1e-3", "x") == 1e-3
    assert parse_value("10", "x") == 10 and parse_value("~", "x") is None and parse_value("true", "x") is True
    assert parse_value("[a, b]", "x") == ["a", "b"]
    assert expand_grid({"knn_threshold": [None, 0.5], "cooc_k": [5, 10]}) == [
        {"knn_threshold": None, "cooc_k": 5}, {"knn_threshold": None, "cooc_k": 10},
        {"knn_threshold": 0.5, "cooc_k": 5}, {"knn_threshold": 0.5, "cooc_k": 10}]
    # RecBole 1.2.1 evals string values of config_dict: they never get there.
    with pytest.raises(ValueError, match="`learner` = 'adam' is a string"):
        expand_grid({"learner": ["adam", "sgd"]})
    with pytest.raises(ValueError, match="--set: `x` = .__import__"):
        check_typed({"x": "__import__('os')"}, "--set")
    with pytest.raises(ValueError, match="repeats a value"):
        expand_grid({"cooc_k": [5, 5]})
    with pytest.raises(ValueError, match="empty"):
        expand_grid({})


def _record(seed, valid, test):
    return {"seed": seed, "best_valid_result": {"recall@20": valid}, "valid_score_bigger": True,
            "test_result": {"recall@20": test, "ndcg@20": test / 2}, "best_epoch": 3, "train_time": 1.0}


def test_best_point_is_chosen_on_validation_not_test():
    points = [{"k": 1}, {"k": 2}, {"k": 3}]
    # Point k=2 has the best mean valid score; k=3 the best test score.
    records = [_record(0, 0.30, 0.20), _record(1, 0.32, 0.22),
               _record(0, 0.40, 0.25), _record(1, 0.38, 0.23),
               _record(0, 0.35, 0.40), _record(1, 0.36, 0.42)]
    rows = aggregate(points, records, [0, 1], "recall@20")
    best = select_on_valid(rows)
    assert best == 1
    assert rows[1]["valid"][0] == pytest.approx(0.39) and rows[1]["valid"][1] == pytest.approx(0.01414, rel=1e-3)
    table = markdown_table(rows, best, "recall@20", "t")
    marked = [line for line in table.splitlines() if line.startswith("|") and "◀" in line]
    assert len(marked) == 1 and marked[0].startswith("| **2**")
    assert "test recall@20 0.2400 ± 0.0141" in table  # the chosen point's test score, not 0.41
    smaller = [dict(r, bigger=False) for r in rows]
    assert select_on_valid(smaller) == 0


def test_store_key_and_atomic_records(tmp_path, tiny):
    config_file, *_ = tiny
    p = Point("MLLMRec", "MLLMRec", {"cooc_k": 3}, 1)
    k = point_key(p, "tiny", [config_file])
    assert k == point_key(Point("x", "MLLMRec", {"cooc_k": 3}, 1), "tiny", [config_file])  # label not in key
    assert k != point_key(Point("MLLMRec", "MLLMRec", {"cooc_k": 3}, 2), "tiny", [config_file])
    assert k != point_key(Point("MLLMRec", "MLLMRec", {"cooc_k": 4}, 1), "tiny", [config_file])
    assert k != point_key(p, "tiny2", [config_file])
    with open(config_file, "a") as f:
        f.write("learning_rate: 0.01\n")
    assert k != point_key(p, "tiny", [config_file])  # the files' contents are part of the key
    store = ResultStore(str(tmp_path / "store"))
    assert store.get(k) is None
    store.put(k, {"key": k, "test_result": {}})
    assert store.get(k) == {"key": k, "test_result": {}} and store.keys() == [k]
    assert not [n for n in os.listdir(store.directory) if n.startswith(".point-")]
    with open(store.path(k), "w") as f:
        f.write("{half")
    assert store.get(k) is None  # reported, trained again


def test_grid_on_tiny_dataset_two_keys(tiny, tmp_path, capsys):
    config_file, *_ = tiny
    out = str(tmp_path / "g" / "tiny")
    res = run_grid("MLLMRec", "tiny", [config_file], {"knn_threshold": [None, 0.2], "cooc_k": [0, 3]},
                   [1, 2], out, fixed={"epochs": 2})
    assert len(res["rows"]) == 4 and res["valid_metric"] == "recall@20"
    assert len(os.listdir(out + ".store")) == 8
    rows = res["rows"]
    assert res["best"] == max(range(4), key=lambda i: (rows[i]["valid"][0], -i))
    first = json.load(open(os.path.join(out + ".store", sorted(os.listdir(out + ".store"))[0])))
    assert first["overrides"]["epochs"] == 2 and first["checkpoint"] is None
    assert os.path.getsize(out + ".png") > 10_000 and os.path.isfile(out + ".md")
    assert "8 run(s) trained, 0 from the store" in capsys.readouterr().out
    # A second run trains nothing and gives the same table.
    again = run_grid("MLLMRec", "tiny", [config_file], {"knn_threshold": [None, 0.2], "cooc_k": [0, 3]},
                     [1, 2], out, fixed={"epochs": 2})
    assert "0 run(s) trained, 8 from the store" in capsys.readouterr().out
    assert again["table"] == res["table"]
    # The same point with one more seed trains only that seed.
    run_grid("MLLMRec", "tiny", [config_file], {"knn_threshold": [None, 0.2], "cooc_k": [0, 3]},
             [1, 2, 3], out, fixed={"epochs": 2})
    assert "4 run(s) trained, 8 from the store" in capsys.readouterr().out


def test_grid_cli_one_key_line_plot_and_errors(tiny, tmp_path, capsys):
    config_file, *_ = tiny
    out = str(tmp_path / "one")
    assert grid_main(["--model", "MLLMRec w/o TE", "--dataset", "tiny", "--config_files", config_file,
                      "--grid", "embedding_size=4,8", "--set", "epochs=1", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "| embedding_size | valid recall@20 |" in text and os.path.getsize(out + ".png") > 10_000
    rec = json.load(open(os.path.join(out + ".store", os.listdir(out + ".store")[0])))
    assert rec["overrides"]["cooc_k"] == 0 and rec["name"] == "MLLMRec w/o TE"  # the variant's overrides
    # The same grid from a YAML file: the same runs, all from the store.
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("embedding_size: [4, 8]\n")
    assert grid_main(["--model", "MLLMRec w/o TE", "--dataset", "tiny", "--config_files", config_file,
                      "--grid-file", str(grid_file), "--set", "epochs=1", "--out", out]) == 0
    assert "0 run(s) trained, 2 from the store" in capsys.readouterr().out
    assert grid_main(["--model", "MLLMRec", "--dataset", "tiny", "--config_files", config_file,
                      "--grid", "learner=adam,sgd", "--out", out]) == 2
    assert "is a string" in capsys.readouterr().err
    assert grid_main(["--model", "MLLMRec", "--dataset", "tiny", "--config_files", config_file,
                      "--grid", "epochs=1,2", "--set", "epochs=1", "--out", out]) == 2
    assert "both fixed" in capsys.readouterr().err
    assert grid_main(["--model", "MLLMRec", "--dataset", "tiny", "--config_files", config_file,
                      "--grid", "epochs", "--out", out]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_killed_grid_resumes_without_retraining(tiny, tmp_path):
    config_file, *_ = tiny
    out = str(tmp_path / "killed")
    store = out + ".store"
    cmd = [sys.executable, "-m", "recbole_models.grid", "--model", "MLLMRec", "--dataset", "tiny",
           "--config_files", config_file, "--grid", "embedding_size=4,6,8,10,12,14", "--grid", "cooc_k=0,3",
           "--set", "epochs=6", "--set", "stopping_step=100", "--out", out]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        while proc.poll() is None and not (os.path.isdir(store) and
                                           any(n.endswith(".json") for n in os.listdir(store))):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the grid finished before it could be killed"
    finished = {n: os.stat(os.path.join(store, n)).st_mtime_ns for n in os.listdir(store) if n.endswith(".json")}
    assert 1 <= len(finished) < 12
    for n in finished:  # every record on disk is complete
        assert "test_result" in json.load(open(os.path.join(store, n)))

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{12 - len(finished)} run(s) trained, {len(finished)} from the store" in done.stdout
    for n, mtime in finished.items():  # finished records were not rewritten
        assert os.stat(os.path.join(store, n)).st_mtime_ns == mtime
    assert len([n for n in os.listdir(store) if n.endswith(".json")]) == 12


def test_grid_with_worker_processes(tiny, tmp_path, capsys):
    config_file, *_ = tiny
    out = str(tmp_path / "jobs")
    # RecBole's Config reads --key=value from sys.argv, in the spawned workers too: a
    # command's own argv must not reach it (here it would change the valid metric).
    sys.argv = ["grid", "--valid_metric=NDCG@10"]
    res = run_grid("MLLMRec", "tiny", [config_file], {"cooc_k": [0, 3]}, [1], out, fixed={"epochs": 1}, jobs=2)
    assert "2 run(s) trained, 0 from the store" in capsys.readouterr().out
    assert sys.argv == ["grid", "--valid_metric=NDCG@10"]  # restored
    for name in os.listdir(out + ".store"):
        rec = json.load(open(os.path.join(out + ".store", name)))
        assert rec["best_valid_score"] == rec["best_valid_result"]["recall@20"]
    assert [r["point"] for r in res["rows"]] == [{"cooc_k": 0}, {"cooc_k": 3}]
    assert len([n for n in os.listdir(out + ".store") if n.endswith(".json")]) == 2
