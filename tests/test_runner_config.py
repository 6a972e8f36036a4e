"""The runner hands RecBole typed values only, never loads its cache pickles, and
checks config keys and ``valid_metric`` before training (issue 9 §1, issue 8 §2)."""
import os
import pickle
import subprocess
import sys

import pytest
import yaml

from recbole_models.config import ConfigError, parse_overrides
from recbole_models.run import make_config, run_recbole
from tests.recbole_data import write_tiny_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAYLOAD = "__import__('os').system('touch pwned') or 1/0"


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture
def tiny(tmp_path):
    return write_tiny_dataset(str(tmp_path))


def cmd(module, *args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_payload_in_variants_and_command_line_runs_no_code(tiny, tmp_path):
    config_file, *_ = tiny
    variants = tmp_path / "variants.yaml"
    variants.write_text(yaml.safe_dump({"evil": {"model": "BPR", "learner": PAYLOAD}}))
    out = cmd("recbole_models.compare", "--models", "evil", "--dataset", "tiny", "--config_files",
              config_file, "--variants", str(variants), "--out", str(tmp_path / "r.md"), cwd=tmp_path)
    assert not (tmp_path / "pwned").exists()
    assert out.returncode == 0, out.stderr[-2000:]
    out = cmd("recbole_models.run", "--model", "BPR", "--dataset", "tiny", "--config_files", config_file,
              f"--learner={PAYLOAD}", cwd=tmp_path)
    assert not (tmp_path / "pwned").exists()
    assert out.returncode == 0, out.stderr[-2000:]


def test_payload_in_config_dict_and_file_stays_a_string(tiny, tmp_path, monkeypatch):
    config_file, *_ = tiny
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"learner: \"{PAYLOAD}\"\n")
    config = make_config("BPR", "tiny", [config_file, str(evil)])
    assert config["learner"] == PAYLOAD
    config = make_config("BPR", "tiny", [config_file], {"learner": PAYLOAD})
    assert config["learner"] == PAYLOAD
    with pytest.raises(TypeError, match=r"topk \[\[5\]\]"):  # a string stays a string, not eval'ed
        make_config("BPR", "tiny", [config_file], {"topk": "[5]"})
    assert not (tmp_path / "pwned").exists()


def test_overrides_arrive_typed(tiny):
    config_file, *_ = tiny
    overrides = parse_overrides(["--learning_rate=1e-3", "--knn_threshold=~", "--topk=[5, 10]",
                                 "--eval_args={split: {RS: [0.7, 0.2, 0.1]}, order: RO, mode: full}",
                                 "--valid_metric=Recall@10", "--show_progress=false", "--state=WARNING",
                                 "--epochs=3"])
    config = make_config("MLLMRec", "tiny", [config_file], overrides)
    assert config["learning_rate"] == 0.001 and isinstance(config["learning_rate"], float)
    assert config["knn_threshold"] is None
    assert config["topk"] == [5, 10]
    assert config["eval_args"]["split"] == {"RS": [0.7, 0.2, 0.1]}
    assert config["show_progress"] is False and config["epochs"] == 3
    with pytest.raises(ConfigError, match="unrecognised argument '--epochs'"):
        parse_overrides(["--epochs", "3"])
    with pytest.raises(ConfigError, match="--topk"):
        parse_overrides(["--topk=[5, 10"])


def test_config_never_reads_sys_argv(tiny, monkeypatch):
    config_file, *_ = tiny
    monkeypatch.setattr(sys, "argv", ["x", "--epochs=7", f"--learner={PAYLOAD}"])
    config = make_config("BPR", "tiny", [config_file])
    assert config["epochs"] == 1 and config["learner"] != PAYLOAD


def test_unknown_keys_are_errors_naming_the_closest_key(tiny, tmp_path):
    config_file, *_ = tiny
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key `epochz` \(did you mean `epochs`\?\)"):
        make_config("BPR", "tiny", [config_file, str(bad)])
    out = cmd("recbole_models.run", "--model", "BPR", "--dataset", "tiny", "--config_files", config_file,
              "--learning_rat=0.1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: command line: unknown config key `learning_rat` "
                                  "(did you mean `learning_rate`?)")
    variants = tmp_path / "v.yaml"
    variants.write_text(yaml.safe_dump({"x": {"model": "BPR", "embeding_size": 8}}))
    from recbole_models.compare import load_variants

    with pytest.raises(ConfigError, match="variant 'x': unknown config key `embeding_size`.*`embedding_size`"):
        load_variants([str(variants)])
    # Every key of our shipped YAML files is known.
    make_config("MLLMRec", "ml-100k", [os.path.join(REPO, "data", "ml-100k.yaml")])
    load_variants([os.path.join(REPO, "data", "ml-100k.variants.yaml")])


def test_config_files_space_separated_as_in_recbole(tiny, tmp_path):
    config_file, *_ = tiny
    extra = tmp_path / "extra.yaml"
    extra.write_text("embedding_size: 5\n")
    config = make_config("BPR", "tiny", [f"{config_file} {extra}"])
    assert config["embedding_size"] == 5


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_cache_pickles_are_never_loaded(tiny, tmp_path):
    config_file, *_ = tiny
    saved = tmp_path / "saved"
    saved.mkdir()
    marker = tmp_path / "unpickled"
    for name in ("tiny-for-BPR-dataloader.pth", "tiny-Dataset.pth"):
        (saved / name).write_bytes(pickle.dumps(_Evil(marker)))
    result = run_recbole("BPR", "tiny", [config_file])
    assert "recall@20" in result["test_result"]
    # RecBole's own entry point for datasets without feature files is replaced too.
    import recbole.data

    config = make_config("BPR", "tiny", [config_file], {"additional_feat_suffix": None,
                                                        "load_col": {"inter": ["user_id", "item_id"]},
                                                        "preload_weight": None, "alias_of_item_id": None,
                                                        "alias_of_user_id": None})
    dataset = recbole.data.create_dataset(config)
    recbole.data.data_preparation(config, dataset)
    assert not marker.exists()


@pytest.mark.parametrize("setting", [{"save_dataset": True}, {"save_dataloaders": True},
                                     {"dataset_save_path": "x.pth"}, {"dataloaders_save_path": "y.pth"}])
def test_pickle_settings_are_refused(tiny, tmp_path, setting):
    config_file, *_ = tiny
    key = next(iter(setting))
    with pytest.raises(ConfigError, match=f"`{key}"):
        make_config("BPR", "tiny", [config_file], setting)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(setting))
    with pytest.raises(ConfigError, match=f"c.yaml: `{key}"):
        make_config("BPR", "tiny", [config_file, str(f)])


def test_valid_metric_must_be_computed_before_training(tiny):
    config_file, *_ = tiny
    with pytest.raises(ConfigError, match=r"valid_metric `Recall@50` is not among the computed metrics"):
        run_recbole("BPR", "tiny", [config_file], {"valid_metric": "Recall@50"})
    assert not os.path.isdir(os.path.join(os.path.dirname(config_file), "saved"))  # nothing trained
    config = make_config("BPR", "tiny", [config_file], {"valid_metric": "MRR@10", "metrics": ["MRR"]})
    assert config["valid_metric"] == "MRR@10"


def test_strings_a_recbole_model_evaluates_must_be_names(tiny):
    config_file, *_ = tiny
    with pytest.raises(ConfigError, match="`teacher: .*` must be a model class name"):
        make_config("BPR", "tiny", [config_file], {"teacher": PAYLOAD})
    assert make_config("BPR", "tiny", [config_file], {"teacher": "DNN"})["teacher"] == "DNN"
