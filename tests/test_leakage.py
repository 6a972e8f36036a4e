"""The leakage audit: LEAKY no-LLM history features (`encode --user-texts history-leaky`),
LEAKY preference prompts with their own files and manifest (`preferences --leaky`,
against the loopback OpenAI server), and `python -m recbole_models.leakage` on the
tiny dataset (feature files swapped, pairing by seed, paired CI and t-test)."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

from mllmrec_pyg.cli import main as cli_main
from mllmrec_pyg.datasets.mmrec import read_feature_file
from mllmrec_pyg.text.encoder import encode_texts, history_texts, load_model
from mllmrec_pyg.text.item_text import item_texts
from recbole_models.leakage import audit, feature_overrides, main as leakage_main, paired_inflation
from tests.recbole_data import write_tiny_dataset
from tests.test_reasoning_http import running_server
from tests.test_reasoning_http import write_dataset as write_pref_dataset
from tests.test_text_encode import write_movies


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


# --- (a) the no-LLM history text -------------------------------------------------

def test_leaky_history_texts_read_every_split(tmp_path):
    d = write_movies(str(tmp_path / "mini"))
    items = item_texts(os.path.join(d, "mini.item"))
    files = [os.path.join(d, f"mini.{p}.inter") for p in ("train", "valid", "test")]
    clean = history_texts(files[0], items, ["u1", "u2", "u3"])
    leaky = history_texts(files, items, ["u1", "u2", "u3"])
    # u1: train i1 (t=100), i2 (300); valid i3 (400); test i4 (500). Most recent first.
    assert clean["u1"] == " | ".join([items["i2"], items["i1"]])
    assert leaky["u1"] == " | ".join([items["i4"], items["i3"], items["i2"], items["i1"]])
    assert leaky["u2"] == " | ".join([items["i4"], items["i3"]])


def test_encode_history_leaky_writes_its_own_file_and_warns(tmp_path, capsys):
    d = write_movies(str(tmp_path / "mini"))
    assert cli_main(["encode", d, "--user-texts", "history", "--user-suffix", "useremb_history"]) == 0
    clean_before = open(os.path.join(d, "mini.useremb_history")).read()
    with pytest.warns(UserWarning, match="LEAKY"):
        assert cli_main(["encode", d, "--user-texts", "history-leaky"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: LEAKY MODE" in captured.err and "mini.useremb_history_leaky" in captured.out
    assert not os.path.exists(os.path.join(d, "mini.useremb"))  # never the default user file
    assert open(os.path.join(d, "mini.useremb_history")).read() == clean_before
    tokens, leaky = read_feature_file(os.path.join(d, "mini.useremb_history_leaky"))
    items = item_texts(os.path.join(d, "mini.item"))
    expected = encode_texts([" | ".join([items["i4"], items["i3"], items["i2"], items["i1"]])], load_model(),
                            show_progress=False)
    assert list(tokens) == ["u1", "u2", "u3"]
    np.testing.assert_allclose(leaky[0], expected[0], atol=1e-5)
    _, clean = read_feature_file(os.path.join(d, "mini.useremb_history"))
    assert not np.allclose(leaky[0], clean[0])
    # A suffix that does not say leaky is refused, before anything is encoded or written.
    assert cli_main(["encode", d, "--user-texts", "history-leaky", "--user-suffix", "useremb_x"]) == 2
    assert "must say so" in capsys.readouterr().err and not os.path.exists(os.path.join(d, "mini.useremb_x"))


# --- (b) LLM preference prompts ---------------------------------------------------

def test_leaky_preferences_have_their_own_files_and_manifest(tmp_path, capsys):
    d = write_pref_dataset(str(tmp_path / "toy"), users=3)
    with running_server() as url:
        args = ["preferences", d, "--backend", "openai", "--model", "loopback", "--base-url", url,
                "--template", "preference", "--max-new-tokens", "6", "--no-progress"]
        assert cli_main(args) == 0
        clean_texts = open(os.path.join(d, "toy.preferences.jsonl")).read()
        with pytest.warns(UserWarning, match="LEAKY"):
            assert cli_main(args + ["--leaky"]) == 0
        assert "WARNING: LEAKY MODE" in capsys.readouterr().err
        with pytest.warns(UserWarning, match="LEAKY"):
            assert cli_main(args + ["--leaky", "--manifest", str(tmp_path / "m.json")]) == 2
        assert "must say leaky" in capsys.readouterr().err
    assert open(os.path.join(d, "toy.preferences.jsonl")).read() == clean_texts  # untouched
    leaky_texts = [json.loads(x) for x in open(os.path.join(d, "toy.preferences.leaky.jsonl"))]
    assert sorted(t["user_id"] for t in leaky_texts) == ["u0", "u1", "u2"]
    m = json.load(open(os.path.join(d, "preferences.leaky.manifest.json")))
    assert m["leaky"] is True and "LEAKY MODE" in m["warning"] and m["texts"] == "toy.preferences.leaky.jsonl"
    # The store is the leaky one (its exact name may carry the model: only its stem is checked).
    assert m["store"].startswith("toy.preferences.leaky.") and os.path.isfile(os.path.join(d, m["store"]))
    # The leaky prompts list the valid/test item (Movie number 60); the clean ones never do.
    assert cli_main(args[:-1] + ["--prompts-only", str(tmp_path / "clean.jsonl")]) == 0
    with pytest.warns(UserWarning, match="LEAKY"):
        assert cli_main(args[:-1] + ["--leaky", "--prompts-only", str(tmp_path / "leaky.jsonl")]) == 0
    leaky = [json.loads(x) for x in open(tmp_path / "leaky.jsonl")]
    clean = [json.loads(x) for x in open(tmp_path / "clean.jsonl")]
    assert all("Movie number 60" in r["prompt"] and r["leaky"] is True for r in leaky)
    assert not any("Movie number 60" in r["prompt"] for r in clean)


# --- the audit command --------------------------------------------------------------

@pytest.fixture
def tiny_two_features(tmp_path):
    """The tiny dataset with its clean user features under `useremb_history`, a copy
    under `useremb_same_leaky` and different features under `useremb_history_leaky`."""
    config_file, d, users, items = write_tiny_dataset(str(tmp_path))
    shutil.copy(os.path.join(d, "tiny.useremb"), os.path.join(d, "tiny.useremb_history"))
    shutil.copy(os.path.join(d, "tiny.useremb"), os.path.join(d, "tiny.useremb_same_leaky"))
    from recbole_models.features import write_feature_file

    rng = np.random.default_rng(7)
    write_feature_file(os.path.join(d, "tiny.useremb_history_leaky"), "uid", "user_emb", users,
                       rng.normal(size=(len(users), 16)))
    return config_file, d


def test_feature_overrides_swap_the_user_file(tiny_two_features):
    config_file, d = tiny_two_features
    from recbole.data import data_preparation

    from recbole_models.features import create_dataset
    from recbole_models.model.mllmrec import MLLMRec
    from recbole_models.run import make_config

    base = make_config("MLLMRec", "tiny", [config_file])
    over = feature_overrides(base, "useremb_history_leaky")
    assert over["additional_feat_suffix"] == ["itememb", "useremb_history_leaky"]
    assert over["load_col"]["useremb_history_leaky"] == ["uid", "user_emb"] and "useremb" not in over["load_col"]
    config = make_config("MLLMRec", "tiny", [config_file], over)
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = MLLMRec(config, train._dataset)
    tokens, feats = read_feature_file(os.path.join(d, "tiny.useremb_history_leaky"))
    for t, row in zip(tokens, feats):  # the model reads the LEAKY file's rows
        torch.testing.assert_close(model.user_x[dataset.token2id(dataset.uid_field, t)],
                                   torch.tensor(row, dtype=torch.float32))
    no_user = make_config("MLLMRec", "tiny", [config_file], {"additional_feat_suffix": ["itememb"]})
    with pytest.raises(ValueError, match="exactly one user feature file"):
        feature_overrides(no_user, "x_leaky")


def test_paired_inflation_matches_scipy():
    from scipy import stats

    clean, leaky = [0.20, 0.22, 0.21, 0.19, 0.20], [0.25, 0.26, 0.27, 0.22, 0.24]
    s = paired_inflation(clean, leaky)
    d = np.array(leaky) - np.array(clean)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert s["diff"] == pytest.approx(d.mean()) and s["ci"] == (pytest.approx(lo), pytest.approx(hi))
    assert s["p"] == pytest.approx(stats.ttest_rel(leaky, clean).pvalue)
    assert s["relative"] == pytest.approx(d.mean() / np.mean(clean))
    one = paired_inflation([0.2], [0.3])
    assert one["diff"] == pytest.approx(0.1) and one["ci"][0] != one["ci"][0]  # nan: one seed has no CI
    with pytest.raises(ValueError, match="as many"):
        paired_inflation([0.2], [0.3, 0.4])


def test_audit_on_tiny_dataset(tiny_two_features, tmp_path, capsys):
    config_file, d = tiny_two_features
    # Identical features under two names: paired by seed, the inflation is exactly zero.
    same = audit("tiny", [config_file], "useremb_history", "useremb_same_leaky", [1, 2], str(tmp_path / "same"),
                 fixed={"epochs": 2})
    assert [r["test_result"] for r in same["clean"]] == [r["test_result"] for r in same["leaky"]]
    assert same["stats"]["recall@20"]["diff"] == 0.0 and same["stats"]["recall@20"]["p"] == 1.0
    # Different features: the table carries both arms, the inflation and its CI.
    out = str(tmp_path / "audit")
    assert leakage_main(["--dataset", "tiny", "--config_files", config_file, "--seeds", "1", "2", "3",
                         "--set", "epochs=2", "--out", out]) == 0
    text = capsys.readouterr()
    assert "LEAKY" in text.err
    res = json.load(open(out + ".json"))
    clean = [r["test_result"]["recall@20"] for r in res["runs"]["CLEAN"]]
    leaky = [r["test_result"]["recall@20"] for r in res["runs"]["LEAKY"]]
    assert [r["seed"] for r in res["runs"]["LEAKY"]] == [1, 2, 3]
    assert clean != leaky
    assert res["inflation"]["recall@20"]["diff"] == pytest.approx(np.mean(np.array(leaky) - np.array(clean)))
    table = open(out + ".md").read()
    assert "| CLEAN (`useremb_history`) |" in table and "| LEAKY (`useremb_history_leaky`) |" in table
    assert "inflation, LEAKY − CLEAN [95% CI]" in table
    # Rerunning trains nothing: every run comes from the store.
    assert leakage_main(["--dataset", "tiny", "--config_files", config_file, "--seeds", "1", "2", "3",
                         "--set", "epochs=2", "--out", out]) == 0
    assert "trained:" not in capsys.readouterr().out
    # Bad input.
    assert leakage_main(["--dataset", "tiny", "--config_files", config_file, "--leaky", "useremb_nope_leaky",
                         "--out", out]) == 2
    assert "tiny.useremb_nope_leaky: no such feature file" in capsys.readouterr().err
    assert leakage_main(["--dataset", "tiny", "--config_files", config_file, "--leaky", "useremb_history",
                         "--clean", "useremb", "--out", out]) == 2
    assert "must say leaky" in capsys.readouterr().err


def test_pipeline_leaky_manifest_says_so(tmp_path, capsys):
    d = write_pref_dataset(str(tmp_path / "toy"), users=2)
    cfg = tmp_path / "p.yaml"
    with running_server() as url:
        for manifest, code in (("preferences.manifest.json", 2), ("preferences.leaky.manifest.json", 0)):
            cfg.write_text(f"dataset_dir: {d}\npreferences:\n  backend: openai\n  model: loopback\n"
                           f"  base_url: {url}\n  template: preference\n  max_new_tokens: 6\n  leaky: true\n"
                           f"  manifest: {manifest}\nencode:\n  enabled: false\n")
            with pytest.warns(UserWarning, match="LEAKY"):
                assert cli_main(["pipeline", "--config", str(cfg), "--no-progress"]) == code
    assert "must say leaky" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(d, "preferences.manifest.json"))
    m = json.load(open(os.path.join(d, "preferences.leaky.manifest.json")))
    assert m["leaky"] is True and m["texts"] == "toy.preferences.leaky.jsonl"
