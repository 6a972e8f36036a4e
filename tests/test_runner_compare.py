"""compare: failed runs as rows, results streamed as they finish, no silent overwrite,
columns from the config, seeds with a paired test, resume after a kill (issues 8 §2, 11 §2)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from recbole_models.compare import compare, markdown_table, read_results
from recbole_models.compare import main as compare_main
from recbole_models.run import cli
from tests.recbole_data import write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture
def tiny(tmp_path):
    config_file, *_ = write_tiny_dataset(str(tmp_path))
    variants = tmp_path / "variants.yaml"
    variants.write_text(yaml.safe_dump({"broken": {"model": "MLLMRec", "knn_k": 0}}))
    return config_file, str(variants)


def run_main(*args):
    return cli(compare_main, [str(a) for a in args])


def assert_well_formed(table: str):
    """Every row of the Markdown table has as many cells as the header."""
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert len({line.count("|") - line.count("\\|") for line in rows}) == 1, table


def test_failed_run_is_a_row_and_the_others_are_kept(tiny, tmp_path, capsys):
    config_file, variants = tiny
    out = tmp_path / "res" / "t.md"
    assert run_main("--models", "Pop", "broken", "BPR", "--dataset", "tiny", "--config_files", config_file,
                    "--variants", variants, "--out", out) == 0
    lines = out.read_text().splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| ") and "---" not in line}
    assert "| Error |" in lines[2]
    assert_well_formed(out.read_text())
    assert "ValueError: " in rows["broken"] and "knn_k" in rows["broken"] and "–" in rows["broken"]
    assert rows["Pop"].count("0.") >= 4 and rows["BPR"].count("0.") >= 4
    stream = read_results(str(tmp_path / "res" / "t.jsonl"))
    assert [r["name"] for r in stream] == ["Pop", "broken", "BPR"]  # one line each, as they finished
    assert "knn_k" in stream[1]["error"] and stream[0]["test_result"]
    assert [r["name"] for r in json.loads((tmp_path / "res" / "t.json").read_text())] == ["Pop", "broken", "BPR"]


def test_results_are_never_overwritten_silently(tiny, tmp_path, capsys):
    config_file, _ = tiny
    out = tmp_path / "t.md"
    args = ["--models", "Pop", "--dataset", "tiny", "--config_files", config_file, "--out", out]
    assert run_main(*args) == 0
    before = {p: p.read_bytes() for p in tmp_path.glob("t.*")}
    capsys.readouterr()
    assert run_main(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "t.md exists: pass --overwrite" in err and "\n" not in err
    assert {p: p.read_bytes() for p in tmp_path.glob("t.*")} == before
    assert run_main(*args, "--overwrite") == 0
    assert len(read_results(str(tmp_path / "t.jsonl"))) == 1  # replaced, not appended


def test_columns_and_header_come_from_the_config(tiny, tmp_path):
    config_file, _ = tiny
    extra = tmp_path / "extra.yaml"
    extra.write_text("metrics: [Hit, MRR]\ntopk: [5]\nvalid_metric: MRR@5\n")
    out = tmp_path / "t.md"
    # RecBole's own form: several config files in one space-separated argument.
    assert run_main("--models", "Pop", "--dataset", "tiny", "--config_files", f"{config_file} {extra}",
                    "--out", out) == 0
    text = out.read_text()
    assert text.startswith("# tiny: test results (epoch chosen on valid MRR@5)")
    assert "| Model | Hit@5 | MRR@5 | Best epoch | Train time (s) |" in text
    assert_well_formed(text)


@pytest.mark.parametrize("flag", ["--nproc=2", "--world_size=2", "--ip=1.2.3.4", "--port=1", "--group_offset=1"])
def test_distributed_flags_are_refused(tiny, tmp_path, capsys, flag):
    config_file, _ = tiny
    assert run_main("--models", "Pop", "--dataset", "tiny", "--config_files", config_file,
                    "--out", tmp_path / "t.md", flag) == 2
    err = capsys.readouterr().err
    assert f"argument {flag.split('=')[0]}: compare trains each run in one process" in err
    assert not (tmp_path / "t.md").exists()


def test_seeds_mean_std_and_paired_test(tiny, tmp_path):
    from scipy.stats import ttest_rel

    config_file, _ = tiny
    out = tmp_path / "s.md"
    assert run_main("--models", "BPR", "Pop", "--seed_list", 1, 2, 3, "--baseline", "Pop", "--dataset", "tiny",
                    "--config_files", config_file, "--out", out, "--epochs=2") == 0
    results = read_results(str(tmp_path / "s.jsonl"))
    assert sorted((r["name"], r["seed"]) for r in results) == [(n, s) for n in ("BPR", "Pop") for s in (1, 2, 3)]
    bpr = [r["test_result"]["recall@20"] for r in sorted(results, key=lambda r: r["seed"]) if r["name"] == "BPR"]
    pop = [r["test_result"]["recall@20"] for r in sorted(results, key=lambda r: r["seed"]) if r["name"] == "Pop"]
    assert len(set(bpr)) > 1  # the seed reached the runs
    mean = sum(bpr) / 3
    std = (sum((v - mean) ** 2 for v in bpr) / 2) ** 0.5
    diff = sum(b - p for b, p in zip(bpr, pop)) / 3
    p = ttest_rel(bpr, pop).pvalue
    row = next(line for line in out.read_text().splitlines() if line.startswith("| BPR "))
    cell = row.split("|")[4].strip()  # Model, Seeds, R@10, R@20
    assert cell == f"{mean:.4f} ± {std:.4f} ({diff:+.4f}{'*' if p < 0.05 else ''})"
    assert row.split("|")[2].strip() == "3/3"
    assert_well_formed(out.read_text())
    table = markdown_table(results, ["recall@20"], baseline="Pop", alpha=1.0)  # everything "significant"
    assert "*)" in table.splitlines()[2] and "*" not in table.splitlines()[3]


def test_rows_with_their_own_reference(tiny, capsys):
    # "+GR" tables: each variant against its own vanilla model, not one baseline for all.
    from scipy.stats import ttest_rel

    from recbole_models.compare import parse_baselines

    scores = {"A": [0.30, 0.32, 0.31], "A+GR": [0.33, 0.34, 0.36], "B": [0.20, 0.21, 0.19], "B+GR": [0.20, 0.23, 0.19]}
    results = [{"name": n, "seed": s, "test_result": {"recall@20": v[s]}, "best_epoch": 1, "train_time": 1.0}
               for n, v in scores.items() for s in range(3)]
    names = list(scores)
    refs = parse_baselines(["A+GR=A", "B+GR=B"], names)
    assert refs == {"A+GR": "A", "B+GR": "B"}
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip()
            for line in markdown_table(results, ["recall@20"], baseline=refs).splitlines()[2:]}
    for row, ref in refs.items():
        diff = sum(a - b for a, b in zip(scores[row], scores[ref])) / 3
        star = "*" if ttest_rel(scores[row], scores[ref]).pvalue < 0.05 else ""
        assert rows[row].endswith(f"({diff:+.4f}{star})"), (row, rows[row])
    assert "(" not in rows["A"] and "(" not in rows["B"]
    # A plain name is the reference of the rows without a pair; one name alone as before.
    assert parse_baselines(["A", "B+GR=B"], names) == {"A+GR": "A", "B": "A", "B+GR": "B"}
    assert markdown_table(results, ["recall@20"], baseline="A") == markdown_table(
        results, ["recall@20"], baseline=parse_baselines(["A"], names))
    for bad, message in [(["C=A"], "'C' (in 'C=A') is not among --models"), (["A", "B"], "two plain names"),
                         (["A=A"], "compares a row with itself"), (["B+GR=B", "B+GR=A"], "'B+GR' has two references")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_baselines(bad, names)
    config_file, _ = tiny
    assert run_main("--models", "Pop", "BPR", "--baseline", "BPR=Popp", "--dataset", "tiny",
                    "--config_files", config_file) != 0
    assert "argument --baseline: 'Popp' (in 'BPR=Popp') is not among --models" in capsys.readouterr().err


def test_killed_sweep_resumes_without_retraining(tiny, tmp_path):
    config_file, _ = tiny
    out = tmp_path / "k.md"
    args = [sys.executable, "-m", "recbole_models.compare", "--models", "MLLMRec", "BPR", "--seeds", "3",
            "--dataset", "tiny", "--config_files", config_file, "--out", str(out), "--epochs=15",
            "--stopping_step=100"]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    jsonl = tmp_path / "k.jsonl"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if jsonl.exists() and len(read_results(str(jsonl))) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    finished = read_results(str(jsonl))
    assert 2 <= len(finished) < 6 and not out.exists(), "the sweep ended before it could be killed"
    done = {(r["name"], r["seed"]): r["test_result"] for r in finished}
    # --resume trains only what is missing (without it the command refuses: see above).
    again = subprocess.run(args + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    trained = [line for line in again.stdout.splitlines() if line.startswith("-- ")]
    assert len(trained) == 6 - len(finished)
    for key in done:
        assert f"-- {key[0]} (seed {key[1]}):" not in again.stdout
    final = read_results(str(jsonl))
    assert sorted((r["name"], r["seed"]) for r in final) == [(n, s) for n in ("BPR", "MLLMRec") for s in range(3)]
    assert all(r["test_result"] == done[(r["name"], r["seed"])] for r in final if (r["name"], r["seed"]) in done)
    assert "MLLMRec" in out.read_text() and "± " in out.read_text()


def test_workers_leave_with_a_killed_parent(tiny, tmp_path):
    # A pool's workers outlive a killed parent: they trained on, unseen, holding the cores
    # the --resume needs. Ours exit within a second (recbole_models.workers).
    import psutil

    config_file, _ = tiny
    args = [sys.executable, "-m", "recbole_models.compare", "--models", "MLLMRec", "--seed_list", "0", "--jobs", "1",
            "--dataset", "tiny", "--config_files", config_file, "--out", str(tmp_path / "w.md"), "--epochs=5000",
            "--stopping_step=10000"]
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []

    def training(p):
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # exited, not yet reaped
        except psutil.NoSuchProcess:
            return False

    try:
        deadline = time.monotonic() + 180
        # Training has begun once the run's first best checkpoint is written.
        while not list((tmp_path / "saved").glob("*.pth")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [c for c in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(c.cmdline())]
        assert workers, "no worker was training"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while any(training(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(training(w) for w in workers), "a worker kept training after its parent was killed"
    finally:
        proc.kill()
        for w in workers:
            if w.is_running():
                w.kill()


def test_resume_reuses_only_same_settings_and_jobs_work(tiny, tmp_path):
    config_file, _ = tiny
    first = compare(["Pop", "BPR"], "tiny", [config_file], seeds=[0, 1])
    ran = []
    again = compare(["Pop", "BPR"], "tiny", [config_file], seeds=[0, 1, 2], previous=first, jobs=2,
                    on_result=lambda r: ran.append((r["name"], r["seed"])))
    assert sorted(ran) == [("BPR", 2), ("Pop", 2)]
    assert [r["test_result"] for r in again if r["seed"] != 2] == [r["test_result"] for r in first]
    ran.clear()
    compare(["Pop"], "tiny", [config_file], config_dict={"epochs": 2}, seeds=[0], previous=first,
            on_result=lambda r: ran.append(r["name"]))
    assert ran == ["Pop"]  # other settings: trained again


def test_read_results_drops_only_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"name": "a"}\n{"name": "b"}\n{"name": "c", "te')
    assert [r["name"] for r in read_results(str(path))] == ["a", "b"]
    path.write_text('{"name": "a"}\nnot json\n{"name": "c"}\n')
    with pytest.raises(ValueError, match="r.jsonl: line 2"):
        read_results(str(path))


def test_report_tables_the_finished_runs_and_trains_nothing(tiny, tmp_path, capsys, monkeypatch):
    config_file, _ = tiny
    out = tmp_path / "p.md"
    base = ["--dataset", "tiny", "--config_files", config_file, "--out", out, "--baseline", "Pop"]
    # A sweep cut short: Pop has seeds 0 and 1, BPR only seed 0.
    assert run_main("--models", "Pop", "BPR", "--seed_list", "0", *base) == 0
    assert run_main("--models", "Pop", "--seed_list", "0", "1", "--resume", *base) == 0
    capsys.readouterr()
    import recbole_models.compare as compare_module

    def no_training(*args):
        raise AssertionError("--report trained a run")

    monkeypatch.setattr(compare_module, "_one_run", no_training)
    assert run_main("--models", "Pop", "BPR", "--seed_list", "0", "1", "--report", *base) == 0
    printed = capsys.readouterr().out
    assert "3 finished run(s)" in printed and "not finished: BPR (seed 1)" in printed
    text = out.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["Pop"].split("|")[2].strip() == "2/2" and rows["BPR"].split("|")[2].strip() == "1/1"
    assert "finished runs only" in text and "Not finished: BPR (seed 1)." in text
    assert len(read_results(str(tmp_path / "p.jsonl"))) == 3  # nothing appended
    assert (tmp_path / "p.png").stat().st_size > 10_000  # the bar chart of the same runs
    with pytest.raises(ValueError, match="--resume: not allowed with argument --report"):
        compare_main(["--models", "Pop", "--dataset", "tiny", "--report", "--resume", "--out", str(out)])
    assert run_main("--models", "Pop", "--dataset", "tiny", "--config_files", config_file, "--report",
                    "--out", tmp_path / "none.md") != 0
    assert "no results to report" in capsys.readouterr().err


def test_bar_chart_bars_are_seed_means_with_std_error_bars(tmp_path, recorded_bars):
    import numpy as np

    from recbole_models.compare import plotted_metrics
    from recbole_models.figures.bars import bar_chart

    calls = recorded_bars
    assert plotted_metrics(["recall@10", "recall@20", "ndcg@10", "ndcg@20"], "Recall@20") == [
        ("recall@20", "R@20"), ("ndcg@20", "N@20")]
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.2, 0.3, 3), rng.uniform(0.3, 0.4, 2)
    results = ([{"name": "A", "seed": s, "test_result": {"recall@20": v}} for s, v in zip((0, 1, 2), a)]
               + [{"name": "B", "seed": s, "test_result": {"recall@20": v}} for s, v in zip((0, 1), b)]
               + [{"name": "C", "seed": 0, "test_result": {}, "error": "ValueError: boom"}])
    path = str(tmp_path / "c.png")
    bar_chart(results, path, "tiny", [("recall@20", "R@20"), ("ndcg@20", "N@20")])
    assert os.path.getsize(path) > 10_000
    [(means, err)] = calls  # no run has ndcg@20: one series; the failed run C is no bar
    np.testing.assert_allclose(means, [a.mean(), b.mean()])
    np.testing.assert_allclose(err, [a.std(ddof=1), b.std(ddof=1)])
    with pytest.raises(ValueError, match="no finished run"):
        bar_chart(results[-1:], path, "tiny")
