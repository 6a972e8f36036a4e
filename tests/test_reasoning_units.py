"""Templates, the generation store, training-only histories (leakage) and bad inputs
of the reasoning stage; no model needed."""
import json
import os
import random
import shutil

import pytest

from mllmrec_pyg.reasoning.histories import WordCounter, cut_history, load_histories
from mllmrec_pyg.reasoning.preferences import build_prompts, item_descriptions, write_prompts
from mllmrec_pyg.reasoning.store import GenerationStore, record_key
from mllmrec_pyg.reasoning.templates import TEMPLATES, PromptTemplate, get_template

ML100K = os.path.join(os.path.dirname(__file__), "..", "data", "ml-100k")
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_dataset(d, name="toy", train=(), valid=(), test=(), items=None):
    """A tiny pre-split RecBole dataset; interactions are (user, item, timestamp)."""
    os.makedirs(d, exist_ok=True)
    items = items or {str(i): f"Movie {i}" for i in range(1, 21)}
    with open(os.path.join(d, f"{name}.item"), "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\tclass:token_seq\n")
        for i, t in items.items():
            f.write(f"{i}\t{t}\tDrama\n")
    for part, rows in (("train", train), ("valid", valid), ("test", test)):
        with open(os.path.join(d, f"{name}.{part}.inter"), "w") as f:
            f.write(HEADER)
            for u, i, t in rows:
                f.write(f"{u}\t{i}\t4\t{t}\n")
    return d


# --- templates -------------------------------------------------------------

def test_reference_templates_and_hash():
    assert "no more than 100 words" in TEMPLATES["preference"].text
    assert TEMPLATES["preference"].fields == ("descriptions",)
    assert TEMPLATES["image"].fields == ("category",)
    a = PromptTemplate("a", "List: {descriptions}.")
    assert a.hash == PromptTemplate("b", "List: {descriptions}.").hash  # the name is not content
    assert a.hash != PromptTemplate("a", "List: {descriptions}!").hash
    assert a.hash != PromptTemplate("a", "List: {descriptions}.", kind="completion").hash
    with pytest.raises(ValueError, match="needs the fields"):
        a.render()
    with pytest.raises(ValueError, match="kind"):
        PromptTemplate("x", "{descriptions}", kind="poem")


def test_postprocess_cuts_at_stop_and_unfinished_sentence():
    t = TEMPLATES["preference-fewshot"]
    raw = " likes dark thrillers. He also enjoys old comedies\n\nItems:\n- Heat (1995)"
    assert t.postprocess(raw) == "This user likes dark thrillers."
    assert t.postprocess(" likes dark thrillers. And also") == "This user likes dark thrillers."
    assert TEMPLATES["preference"].postprocess("  Likes  sci-fi.  ") == "Likes sci-fi."


def test_template_from_yaml_and_errors(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text('text: "Items: {descriptions}. Preferences:"\nkind: completion\nstop: ["\\n"]\n')
    t = get_template(str(p))
    assert t.name == "t" and t.kind == "completion" and t.stop == ("\n",)
    (tmp_path / "bad.yaml").write_text("kind: chat\n")
    with pytest.raises(ValueError, match="'text'"):
        get_template(str(tmp_path / "bad.yaml"))
    with pytest.raises(FileNotFoundError, match="neither a built-in"):
        get_template("no-such-template")


# --- store -----------------------------------------------------------------

def _rec(key, text="t"):
    return {"key": key, "id": key, "model": "m", "template": "h", "input": "i", "raw": text, "text": text}


def test_store_append_reload_and_keys(tmp_path):
    path = str(tmp_path / "s.jsonl")
    s = GenerationStore(path)
    s.append([_rec("a"), _rec("b")])
    s2 = GenerationStore(path)
    assert len(s2) == 2 and s2.get("b")["text"] == "t"
    k = record_key("m", "h1", "i", {"max_new_tokens": 8})
    assert k != record_key("m", "h2", "i", {"max_new_tokens": 8})
    assert k != record_key("m2", "h1", "i", {"max_new_tokens": 8})
    assert k != record_key("m", "h1", "i", {"max_new_tokens": 9})
    with pytest.raises(ValueError, match="lacks the fields"):
        s.append([{"key": "x"}])


def test_store_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = str(tmp_path / "s.jsonl")
    GenerationStore(path).append([_rec("a")])
    with open(path, "a") as f:
        f.write('{"key": "b", "raw": "half')  # killed mid-write
    s = GenerationStore(path)
    assert list(s.records) == ["a"]
    s.append([_rec("c")])
    lines = open(path).read().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]  # no glued line
    assert "half" in open(path + ".torn").read()


def test_store_malformed_line_skipped_or_strict(tmp_path, caplog):
    path = str(tmp_path / "s.jsonl")
    GenerationStore(path).append([_rec("a")])
    with open(path, "a") as f:
        f.write("not json\n")
        f.write(json.dumps({"key": "z"}) + "\n")
    GenerationStore(path).append([_rec("b")])
    s = GenerationStore(path)
    assert set(s.records) == {"a", "b"} and s.skipped == [2, 3]
    assert "line 2: malformed record" in caplog.text
    with pytest.raises(ValueError, match=r"s.jsonl, line 2: malformed"):
        GenerationStore(path, strict=True)


# --- histories and the budget rule ------------------------------------------

def test_histories_are_training_only_most_recent_first(tmp_path):
    d = write_dataset(str(tmp_path / "toy"), train=[("u1", "1", 10), ("u1", "2", 30), ("u1", "3", 20)],
                      valid=[("u1", "4", 40), ("u2", "5", 50)], test=[("u1", "6", 60)])
    h = load_histories(d)
    assert h == {"u1": ["2", "3", "1"], "u2": []}  # u2 is only in valid: listed, empty
    with pytest.warns(UserWarning, match="LEAKY"):
        leaky = load_histories(d, leaky=True)
    assert leaky["u1"] == ["6", "4", "2", "3", "1"]


def test_budget_rule_keeps_recent_truncates_and_orders_oldest_first():
    desc = {"a": "one two three four five six", "b": "b1 b2", "c": "c1 c2", "d": "d1 d2"}
    # The joiner "; " costs one word: 2 + 1 + 2 + 1 + 2 = 8.
    text, kept = cut_history(["d", "c", "b", "a"], desc, WordCounter(), history_tokens=8, item_tokens=3)
    assert (text, kept) == ("b1 b2; c1 c2; d1 d2", 3)  # "a" (oldest) no longer fits
    text, kept = cut_history(["a"], desc, WordCounter(), history_tokens=6, item_tokens=3)
    assert text == "one two three"  # per-item truncation
    text, kept = cut_history(["d", "c", "b"], desc, WordCounter(), history_tokens=100, item_tokens=3, max_items=2)
    assert kept == 2 and text.startswith("c1")
    with pytest.raises(ValueError, match="history_tokens"):
        cut_history(["a"], desc, WordCounter(), history_tokens=0, item_tokens=3)


def test_single_inter_file_needs_explicit_split(tmp_path):
    d = tmp_path / "mm"
    d.mkdir()
    (d / "mm.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\tx_label:token\n"
                                "u\t1\t1\t0\nu\t2\t2\t0\nu\t3\t3\t2\n")
    with pytest.raises(ValueError, match="no split"):
        load_histories(str(d))
    assert load_histories(str(d), split_column="x_label") == {"u": ["2", "1"]}
    with pytest.raises(ValueError, match="no split column 'label'"):
        load_histories(str(d), split_column="label")
    with pytest.raises(FileNotFoundError):
        load_histories(str(tmp_path / "nowhere"))


def test_empty_history_and_over_budget_prompt(tmp_path):
    d = write_dataset(str(tmp_path / "toy"), train=[("u1", "1", 1), ("u1", "2", 2)], valid=[("u2", "3", 3)])
    tpl = TEMPLATES["preference"]
    desc = item_descriptions(d)
    prompts = {p.user_id: p for p in build_prompts(d, tpl, desc, history_tokens=50)}
    assert prompts["u2"].text is None and prompts["u2"].n_items == 0
    assert "Movie 1" in prompts["u1"].text and "Movie 3" not in prompts["u1"].text
    with pytest.raises(ValueError, match="user u1: prompt of .* exceeds max_prompt_tokens=20"):
        build_prompts(d, tpl, desc, history_tokens=50, max_prompt_tokens=20)
    with pytest.raises(ValueError, match="no {descriptions} field"):
        build_prompts(d, TEMPLATES["image"], desc)
    with pytest.raises(ValueError, match="no description"):
        build_prompts(d, tpl, {"1": "x"})


# --- leakage: valid/test files cannot change a prompt ------------------------

def test_rewriting_valid_and_test_changes_no_prompt(tmp_path):
    d = str(tmp_path / "ml-100k")
    os.makedirs(d)
    for suffix in ("item", "train.inter", "valid.inter", "test.inter"):
        shutil.copy(os.path.join(ML100K, f"ml-100k.{suffix}"), d)
    tpl = TEMPLATES["preference-fewshot"]
    desc = item_descriptions(d, item_template="{movie_title} ({release_year}; {class})")
    before = build_prompts(d, tpl, desc, history_tokens=120, item_tokens=24)
    write_prompts(str(tmp_path / "before.jsonl"), before, tpl, "words")

    # Replace every valid/test interaction with another item at the LATEST timestamp,
    # exactly where a leaky list would pick it up first.
    rng = random.Random(0)
    for part in ("valid", "test"):
        path = os.path.join(d, f"ml-100k.{part}.inter")
        rows = open(path).read().splitlines()
        out = [rows[0]] + [f"{r.split()[0]}\t{rng.randint(1, 1682)}\t5\t9999999999" for r in rows[1:]]
        out.append("9999\t1\t5\t9999999999")  # a user who exists only in test
        open(path, "w").write("\n".join(out) + "\n")
    after = build_prompts(d, tpl, desc, history_tokens=120, item_tokens=24)
    write_prompts(str(tmp_path / "after.jsonl"), after, tpl, "words")

    b = {p.user_id: p.text for p in before}
    a = {p.user_id: p.text for p in after}
    assert len(b) == 943 and all(b[u] == a[u] for u in b)
    assert a["9999"] is None  # listed (so it gets a text) but with no history
    lines = lambda f: [json.loads(x)["prompt"] for x in open(tmp_path / f) if '"user_id": "9999"' not in x]  # noqa
    assert lines("before.jsonl") == lines("after.jsonl")

    # The same rewrite DOES change the leaky prompts: the test can fail.
    with pytest.warns(UserWarning, match="LEAKY"):
        leaky = {p.user_id: p.text for p in build_prompts(d, tpl, desc, history_tokens=120, item_tokens=24,
                                                           leaky=True)}
    assert sum(leaky[u] != b[u] for u in b) > 900


def test_prompts_only_cli_writes_counts_and_generates_nothing(tmp_path, capsys):
    from mllmrec_pyg.cli import main

    d = write_dataset(str(tmp_path / "toy"), train=[("u1", "1", 1), ("u1", "2", 2), ("u2", "3", 1)])
    out = tmp_path / "p.jsonl"
    # An openai backend at a closed port: nothing may be contacted in --prompts-only.
    code = main(["preferences", d, "--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                 "--template", "preference", "--prompts-only", str(out)])
    assert code == 0
    rows = [json.loads(x) for x in open(out)]
    assert [r["user_id"] for r in rows] == ["u1", "u2"]
    assert rows[0]["prompt_tokens"] == len(rows[0]["prompt"].split()) and rows[0]["token_counter"] == "words"
    assert rows[0]["template_hash"] == TEMPLATES["preference"].hash and rows[0]["leaky"] is False
    assert not [f for f in os.listdir(d) if f.endswith(".store.jsonl")]
    assert json.loads(capsys.readouterr().out.strip())["users"] == 2
