"""The newcomer's path (issue 8 §5): the README's commands, `encode` failing first,
`prepare movielens` into any directory, a usable MMRec export, the openai backend on a
chat-only server, the demo's run list, and readable RecBole output."""
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mllmrec_pyg.cli import main as cli_main
from mllmrec_pyg.datasets.mmrec import export_mmrec, import_mmrec
from test_datasets_mmrec import write_mmrec_fixture

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_single_inter(d, name="mini"):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{name}.item"), "w") as f:
        f.write(ITEM_HEADER + "i1\tHeat\t1995\tAction\ni2\tAlien\t1979\tHorror\n")
    with open(os.path.join(d, f"{name}.inter"), "w") as f:
        f.write(INTER_HEADER + "u1\ti1\t5\t1\nu1\ti2\t4\t2\nu2\ti1\t3\t3\n")
    return d


# ---- README: the commands, in order, give the README's rows -----------------------------

def test_encode_names_the_user_texts_it_encodes(tmp_path, capsys):
    """No silent default: the user text decides which README row a run reproduces."""
    d = write_single_inter(str(tmp_path / "mini"))
    with pytest.raises(SystemExit) as exit_:
        cli_main(["encode", d])
    assert exit_.value.code == 2
    assert "--user-texts" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(d, "mini.itememb"))


def test_readme_commands_reproduce_the_readme_rows():
    """The README's `encode` lines write exactly the feature files that the runs of its
    table read: the shipped Gemma texts into `.useremb` (data/ml-100k.yaml, the MLLMRec
    row) and the history texts into `.useremb_history` (the "history text" variant)."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    encodes = [line.split("#")[0].split() for line in readme.splitlines() if line.startswith("mllmrec encode ")]
    by_suffix = {}
    for argv in encodes:
        opts = dict(zip(argv[3::2], argv[4::2]))
        assert "--user-texts" in opts, argv
        by_suffix[opts.get("--user-suffix", "useremb")] = opts["--user-texts"]
    manifest = json.load(open(os.path.join(ROOT, "data", "ml-100k", "preferences.manifest.json")))
    assert by_suffix["useremb"] == "data/ml-100k/ml-100k.preferences.gemma3-270m.jsonl"
    assert manifest["users"] == 943
    assert by_suffix["useremb_history"] == "history"
    config = yaml.safe_load(open(os.path.join(ROOT, "data", "ml-100k.yaml")))
    variants = yaml.safe_load(open(os.path.join(ROOT, "data", "ml-100k.variants.yaml")))
    assert config["additional_feat_suffix"] == ["itememb", "useremb"]
    assert variants["MLLMRec (history text)"]["additional_feat_suffix"] == ["itememb", "useremb_history"]
    # The demo encodes the same way.
    from mllmrec_pyg.cli import demo

    assert demo.PREFERENCES == os.path.basename(by_suffix["useremb"])


def test_encode_history_on_a_single_inter_fails_before_encoding(tmp_path, capsys):
    d = write_single_inter(str(tmp_path / "mini"))
    assert cli_main(["encode", d, "--user-texts", "history"]) == 2
    err = capsys.readouterr().err
    assert "mini.train.inter" in err and "--user-texts none" in err and "--user-texts FILE.jsonl" in err
    # Nothing was encoded: no item file and no chunk cache.
    assert not os.path.exists(os.path.join(d, "mini.itememb"))
    assert not os.path.exists(os.path.join(d, ".encode_cache"))


def test_encode_missing_user_text_fails_before_encoding(tmp_path, capsys):
    d = write_single_inter(str(tmp_path / "mini"))
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text('{"user_id": "u1", "text": "likes action"}\n')
    assert cli_main(["encode", d, "--user-texts", str(prefs)]) == 2
    assert "no text for users ['u2']" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(d, ".encode_cache"))


# ---- prepare movielens into any directory -------------------------------------------------

def test_prepare_movielens_names_files_after_the_directory_and_writes_the_yaml(tmp_path, capsys):
    out = tmp_path / "data" / "ml100k-s7"
    assert cli_main(["prepare", "movielens", "--out", str(out), "--seed", "7"]) == 0
    names = sorted(os.listdir(out))
    assert names == ["ml100k-s7.item", "ml100k-s7.mllmrec.yaml", "ml100k-s7.test.inter", "ml100k-s7.train.inter",
                     "ml100k-s7.valid.inter", "ml100k-s7.yaml", "split.json"]
    # RecBole loads it under its own name with the written YAML, as the comment says.
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="BPR", dataset="ml100k-s7", config_file_list=[str(out / "ml100k-s7.yaml")],
                    config_dict={"state": "WARNING", "checkpoint_dir": str(tmp_path / "saved")})
    assert config["data_path"] == str(out)
    dataset = create_dataset(config)
    assert dataset.inter_num == 100000 and dataset.user_num - 1 == 943
    mllmrec = yaml.safe_load((out / "ml100k-s7.mllmrec.yaml").read_text())
    assert mllmrec["additional_feat_suffix"] == ["itememb", "useremb"]
    assert json.loads((out / "split.json").read_text())["dataset"] == "ml100k-s7"


# ---- mmrec export: a config MMRec can use ------------------------------------------------

@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_mmrec_export_yaml_has_the_feature_keys_block_style_and_umask_modes(tmp_path, umask_022):
    src = tmp_path / "src"
    write_mmrec_fixture(src)
    for f in ("text_feat.npy", "image_feat.npy"):  # MLLMRec's files only: image_text + user
        os.remove(src / f)
    ds = tmp_path / "data" / "toymm"
    import_mmrec(str(src), str(ds))
    out = tmp_path / "mmrec" / "toymm"
    export_mmrec(str(ds), str(out))
    path = out / "mmrec_dataset.yaml"
    config = yaml.safe_load(path.read_text())
    # MMRec's GeneralRecommender joins data_path with both keys and loads the files that exist.
    for key in ("vision_feature_file", "text_feature_file", "user_graph_dict_file"):
        assert isinstance(config[key], str), key
    assert config["text_feature_file"] == "image_text_feat.npy"
    assert os.path.isfile(out / config["text_feature_file"])
    assert config["inter_file_name"] == "toymm.inter" and config["USER_ID_FIELD"] == "userID"
    # Block style: a key appended by hand keeps the file valid and the other keys intact.
    assert "{" not in path.read_text() and "[" not in path.read_text()
    with open(path, "a") as f:
        f.write("user_graph_dict_file: ugraph.npy\n")
    assert yaml.safe_load(path.read_text())["inter_file_name"] == "toymm.inter"
    for root in (ds, out):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o755, root
        for name in os.listdir(root):
            assert stat.S_IMODE(os.stat(root / name).st_mode) == 0o644, root / name
    assert np.load(out / "image_text_feat.npy").shape[0] == 30


# ---- the openai backend on a chat-only server ---------------------------------------------

@pytest.fixture()
def chat_only_server():
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "openai_server.py"), "--chat-only"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def write_prefs_dataset(d, name="toy"):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{name}.item"), "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\n" + "".join(f"{i}\tMovie {i}\n" for i in range(1, 9)))
    for part, rows in (("train", [(u, u + k + 1) for u in range(3) for k in range(3)]),
                       ("valid", [(u, 8) for u in range(3)]), ("test", [(u, 7) for u in range(3)])):
        with open(os.path.join(d, f"{name}.{part}.inter"), "w") as f:
            f.write(INTER_HEADER + "".join(f"u{u}\t{i}\t4\t{i}\n" for u, i in rows))
    return d


def test_openai_backend_defaults_to_the_chat_template(chat_only_server, tmp_path, capsys):
    d = write_prefs_dataset(str(tmp_path / "toy"))
    out = str(tmp_path / "prefs.jsonl")
    argv = ["preferences", d, "--backend", "openai", "--base-url", chat_only_server, "--model", "loopback",
            "--max-new-tokens", "8", "--retries", "0", "--no-progress", "--output", out]
    assert cli_main(argv + ["--store", str(tmp_path / "a.store.jsonl")]) == 0
    texts = [json.loads(line) for line in open(out)]
    assert [t["user_id"] for t in texts] == ["u0", "u1", "u2"]
    assert all(t["text"].startswith("Answer") for t in texts)
    capsys.readouterr()
    # The completion path stays available, and a chat-only server's 404 says what to do.
    assert cli_main(argv + ["--store", str(tmp_path / "b.store.jsonl"), "--template", "preference-fewshot"]) == 1
    err = capsys.readouterr().err
    assert "no /v1/completions route" in err and "--template preference" in err


def test_local_backends_keep_the_fewshot_default():
    from mllmrec_pyg.reasoning.cli_args import default_preference_template
    from mllmrec_pyg.reasoning.templates import get_template

    assert get_template(default_preference_template("openai")).kind == "chat"
    assert get_template(default_preference_template("transformers")).kind == "completion"


# ---- the demo's runs ---------------------------------------------------------------------

def test_demo_quick_runs_are_a_subset_and_full_is_everything():
    from mllmrec_pyg.cli import build_parser, demo
    from recbole_models.compare import load_variants, resolve
    from recbole_models import get_model

    assert set(demo.QUICK_RUNS) < set(demo.FULL_RUNS)
    assert "MLLMRec" in demo.QUICK_RUNS and "BPR" in demo.QUICK_RUNS
    variants = load_variants([os.path.join(ROOT, "data", "ml-100k.variants.yaml")])
    for name in demo.FULL_RUNS:  # every name resolves to a model
        get_model(resolve(name, variants)[0])
    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert args.full is False and args.runs is None
    assert parser.parse_args(["demo", "--full"]).full
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--full", "--runs", "BPR"])
    text = demo.protocol(os.path.join(ROOT, "data", "ml-100k.yaml"))
    assert "early stopping after 20 epochs" in text and "at most 1000 epochs" in text


def test_recbole_future_warnings_are_silenced_and_only_those(tmp_path):
    """A real RecBole run in a fresh interpreter: RecBole's pandas/torch FutureWarnings
    are gone, a FutureWarning from elsewhere still shows."""
    from recbole_data import write_tiny_dataset

    config_file, _, _, _ = write_tiny_dataset(str(tmp_path))
    code = ("import warnings, recbole_models.run as r\n"
            f"r.run_recbole('BPR', 'tiny', [{config_file!r}], {{'epochs': 1, 'state': 'WARNING', "
            f"'checkpoint_dir': {str(tmp_path / 'saved')!r}}}, saved=False)\n"
            "warnings.warn('ours', FutureWarning)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE]), PYTHONWARNINGS="default")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FutureWarning: ours" in done.stderr
    warned = [line for line in done.stderr.splitlines() if "FutureWarning" in line]
    assert not [line for line in warned if f"{os.sep}recbole{os.sep}" in line], warned


def test_demo_bar_chart_has_seed_error_bars(tmp_path, recorded_bars):
    import numpy as np

    from mllmrec_pyg.cli import demo

    calls = recorded_bars
    rng = np.random.default_rng(0)
    scores = {"MLLMRec": rng.uniform(0.2, 0.3, 3), "BPR": rng.uniform(0.3, 0.4, 3)}
    results = [{"name": n, "seed": s, "test_result": {"recall@20": v, "ndcg@20": v / 2}}
               for n, vs in scores.items() for s, v in zip((1, 2, 3), vs)]
    path = str(tmp_path / "bars.png")
    demo.plot(results, path)
    assert os.path.getsize(path) > 10_000
    (r_means, r_err), (n_means, n_err) = calls
    np.testing.assert_allclose(r_means, [scores["MLLMRec"].mean(), scores["BPR"].mean()])
    np.testing.assert_allclose(r_err, [scores["MLLMRec"].std(ddof=1), scores["BPR"].std(ddof=1)])
    np.testing.assert_allclose(n_err, np.array(r_err) / 2)
    calls.clear()
    demo.plot([r for r in results if r["seed"] == 1], path)  # one seed: no error bars
    assert all(err is None for _, err in calls)
