"""A real generation with the bundled Gemma 3 270M (GGUF, base model), few users and
few tokens. Loading converts the GGUF file (about a minute on 2 cores the first
time), so these tests are ``slow``."""
import json
import os

import pytest

from mllmrec_pyg.cli import main
from mllmrec_pyg.reasoning.store import GenerationStore

pytestmark = pytest.mark.slow

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_movies(d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "mini.item"), "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for i, (t, y, g) in enumerate([("Star Wars", 1977, "Action Sci-Fi"), ("Alien", 1979, "Horror Sci-Fi"),
                                       ("Toy Story", 1995, "Animation Comedy"), ("Fargo", 1996, "Crime Drama"),
                                       ("Heat", 1995, "Action Crime")], start=1):
            f.write(f"{i}\t{t}\t{y}\t{g}\n")
    open(os.path.join(d, "mini.train.inter"), "w").write(
        HEADER + "a\t1\t5\t1\na\t2\t5\t2\nb\t3\t4\t1\nb\t4\t4\t2\nc\t5\t3\t1\n")
    for part in ("valid", "test"):
        open(os.path.join(d, f"mini.{part}.inter"), "w").write(HEADER + "a\t3\t5\t9\n")
    return d


def test_bundled_gemma_generates_preferences(tmp_path, capsys):
    d = write_movies(str(tmp_path / "mini"))
    args = ["preferences", d, "--template", "preference-fewshot", "--item-template",
            "{movie_title} ({release_year}; {class})", "--max-new-tokens", "12", "--batch-size", "2",
            "--history-tokens", "64", "--threads", "2", "--no-progress"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["generated"] == 3 and report["generated_tokens"] > 0
    texts = {json.loads(x)["user_id"]: json.loads(x)["text"] for x in open(os.path.join(d, "mini.preferences.jsonl"))}
    assert set(texts) == {"a", "b", "c"} and all(t.startswith("This user") for t in texts.values())
    records = list(GenerationStore(report["store"]).records.values())
    assert all(r["model"].startswith("gguf:gemma-3-270m-q4_k_m.gguf@") for r in records)
    assert all(0 < r["generated_tokens"] <= 12 and r["raw"] for r in records)
    # Greedy decoding: the single-prompt result equals the batched one (left padding is right).
    from mllmrec_pyg.reasoning.backends import GenerationSettings, make_backend
    from mllmrec_pyg.reasoning.preferences import build_prompts, item_descriptions
    from mllmrec_pyg.reasoning.templates import TEMPLATES

    b = make_backend("transformers", "gemma3-270m", GenerationSettings(max_new_tokens=12), batch_size=1)
    tpl = TEMPLATES["preference-fewshot"]
    prompts = build_prompts(d, tpl, item_descriptions(d, item_template="{movie_title} ({release_year}; {class})"),
                            b.token_counter(), history_tokens=64)
    single = b.generate([prompts[0].text], kind="completion", stop=tpl.stop)[0]
    stored = next(r for r in records if r["id"] == prompts[0].user_id)
    assert single.split("\n\n")[0].strip()[:20] == stored["raw"].split("\n\n")[0].strip()[:20]
