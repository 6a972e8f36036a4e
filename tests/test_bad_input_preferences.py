"""Reliability suite, ``mllmrec preferences``: bad arguments and files end in one line
naming the argument or file, exit 2, no traceback, nothing written (subprocesses)."""
import json
import os

import pytest
from bad_input import check_bad_input, run_cli, write_toy
from test_reasoning_http import running_server

# A server that is never contacted: every case fails before the first request.
OFFLINE = ["--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--no-progress"]


@pytest.fixture()
def toy(tmp_path):
    write_toy(tmp_path / "toy")
    (tmp_path / "bad.yaml").write_text('text: "Items: {descriptions}\n  kind: [\n')
    (tmp_path / "bad.json").write_text('{"text": "Items: {descriptions}",\n')
    (tmp_path / "list.yaml").write_text("- one\n- two\n")
    (tmp_path / "outdir").mkdir()
    return tmp_path


CASES = [
    (["--retries", "-1"], ["--retries", "-1", ">= 0"]),
    (["--limit", "-1"], ["--limit", "-1"]),
    (["--limit", "0"], ["--limit", ">= 1"]),
    (["--history-tokens", "abc"], ["--history-tokens", "abc"]),
    (["--concurrency", "0"], ["--concurrency"]),
    (["--timeout", "nan"], ["--timeout"]),
    (["--top-p", "1.5"], ["--top-p"]),
    (["--template", "bad.yaml"], ["--template", "bad.yaml", "line 3", "YAML"]),
    (["--template", "bad.json"], ["--template", "bad.json"]),
    (["--template", "list.yaml"], ["--template", "list.yaml", "mapping"]),
    (["--template", "missing.yaml"], ["missing.yaml"]),
    (["--item-template", "{0}"], ["--item-template", "{0}", "positional"]),
    (["--item-template", "{}"], ["--item-template", "positional"]),
    (["--item-template", "{movie_title.nope}"], ["--item-template", "movie_title.nope"]),
    (["--item-template", "{movie_title[0]}"], ["--item-template", "movie_title[0]"]),
    (["--item-template", "{nope}"], ["--item-template", "{nope}", "movie_title"]),
    (["--item-template", "{movie_title:d}"], ["--item-template", "movie_title:d"]),
    (["--item-template", "{"], ["--item-template"]),
    (["--prompts-only", "outdir"], ["outdir", "Is a directory"]),
    (["--no-such-option"], ["--no-such-option"]),
]


@pytest.mark.parametrize("args, needles", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_bad_argument_is_one_line_naming_it(toy, args, needles):
    check_bad_input(toy, ["preferences", "toy", *OFFLINE, *args], *needles)


def test_missing_dataset_directory(toy):
    check_bad_input(toy, ["preferences", "nope", *OFFLINE], "nope", "does not exist")


def test_limit_writes_the_texts_generated_so_far(tmp_path):
    """``--limit 3`` writes the output JSONL with those 3 users; a full run completes it;
    a later ``--limit 2`` run never shrinks it (the stored texts are kept in it)."""
    d = write_toy(tmp_path / "toy", users=6)
    out = os.path.join(d, "texts.jsonl")
    with running_server() as url:
        args = ["preferences", d, "--backend", "openai", "--model", "loopback", "--base-url", url,
                "--template", "preference", "--output", out, "--no-progress"]
        first = run_cli(args + ["--limit", "3"], tmp_path)
        assert first.returncode == 0, first.stderr
        summary = json.loads(first.stdout.strip().splitlines()[-1])
        assert summary["generated"] == 3 and summary["partial"] and summary["users_written"] == 3
        assert [json.loads(x)["user_id"] for x in open(out)] == ["u0", "u1", "u2"]
        full = run_cli(args, tmp_path)
        assert full.returncode == 0 and json.loads(full.stdout.strip().splitlines()[-1])["generated"] == 3
        texts = open(out).read()
        assert len(texts.splitlines()) == 6
        again = run_cli(args + ["--limit", "2"], tmp_path)
        assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["generated"] == 0
        assert open(out).read() == texts
