"""Reliability suite, ``mllmrec pipeline --config``: a bad config ends in one line naming
the file and the key, exit 2, no traceback, nothing written (subprocesses)."""
import pytest
from bad_input import check_bad_input, write_toy

PREFERENCES = "preferences:\n  backend: openai\n  model: m\n  base_url: http://127.0.0.1:9/v1\n"


@pytest.mark.parametrize("body, needles", [
    (PREFERENCES + "  history_tokens: abc\n", ["p.yaml", "preferences.history_tokens", "abc"]),
    (PREFERENCES + "  history_tokens: 2.5\n", ["preferences.history_tokens", "2.5"]),
    (PREFERENCES + "  retries: -1\n", ["preferences.retries", "-1"]),
    (PREFERENCES + "  max_new_tokens: 0\n", ["preferences.max_new_tokens"]),
    (PREFERENCES + "  leaky: 'yes'\n", ["preferences.leaky", "true or false"]),
    (PREFERENCES + "  template: [a, b]\n", ["preferences.template", "string"]),
    (PREFERENCES + "  item_template: '{movie_title.nope}'\n", ["p.yaml", "preferences.item_template", "nope"]),
    (PREFERENCES + "  item_template: '{0}'\n", ["preferences.item_template", "positional"]),
    (PREFERENCES + "  epochz: 3\n", ["p.yaml", "epochz"]),
    (PREFERENCES + "  history_tokens: [1\n", ["p.yaml", "line 7", "YAML"]),
    ("encode:\n  batch_size: many\n", ["encode.batch_size", "many"]),
    ("describe_images:\n  item_template: '{0}'\n", ["describe_images.item_template", "positional"]),
], ids=["int-text", "int-float", "retries", "max-new-tokens", "flag", "string", "item-template-attr",
        "item-template-positional", "unknown-key", "yaml-syntax", "encode-int", "describe-item-template"])
def test_bad_config_names_file_and_key(tmp_path, body, needles):
    write_toy(tmp_path / "toy")
    (tmp_path / "p.yaml").write_text("dataset_dir: toy\n" + body)
    check_bad_input(tmp_path, ["pipeline", "--config", "p.yaml", "--no-progress"], *needles)


def test_missing_directory_or_list_config(tmp_path):
    (tmp_path / "cfg.yaml").mkdir()
    (tmp_path / "list.yaml").write_text("- a list\n")
    check_bad_input(tmp_path, ["pipeline", "--config", "list.yaml"], "list.yaml", "mapping")
    check_bad_input(tmp_path, ["pipeline", "--config", "missing.yaml"], "missing.yaml")
    check_bad_input(tmp_path, ["pipeline", "--config", "cfg.yaml"], "cfg.yaml")
