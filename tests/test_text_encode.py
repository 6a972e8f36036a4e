"""Item texts, no-LLM history texts, resumable sentence encoding and ``mllmrec encode``,
with the real bundled all-MiniLM-L6-v2 (small enough for CPU in seconds)."""
import filecmp
import json
import os

import numpy as np
import pytest

from mllmrec_pyg.cli import main as cli_main
from mllmrec_pyg.datasets.mmrec import read_feature_file
from mllmrec_pyg.text.encoder import encode_dataset, encode_texts, history_texts, load_model
from mllmrec_pyg.text.io import read_texts, write_texts
from mllmrec_pyg.text.item_text import item_texts

ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


@pytest.fixture(scope="module")
def minilm():
    return load_model()


def write_movies(d, name="mini"):
    """A MovieLens-like dataset: 4 items, 3 users, pre-split. User u1's valid and test
    items are i3 and i4, which must never reach u1's history text."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{name}.item"), "w") as f:
        f.write(ITEM_HEADER)
        f.write("i1\tToy Story\t1995\tAnimation Children's Comedy\n")
        f.write("i2\tHeat\t1995\tAction Crime Thriller\n")
        f.write("i3\tCasablanca\t1942\tDrama Romance War\n")
        f.write("i4\tAlien\t1979\tAction Horror Sci-Fi\n")
    rows = {"train": ["u1\ti1\t5\t100\n", "u1\ti2\t3\t300\n", "u2\ti3\t4\t50\n", "u3\ti4\t2\t70\n",
                      "u3\ti1\t4\t60\n"],
            "valid": ["u1\ti3\t4\t400\n", "u2\ti4\t5\t60\n"],
            "test": ["u1\ti4\t1\t500\n", "u3\ti2\t3\t80\n"]}
    for split, lines in rows.items():
        with open(os.path.join(d, f"{name}.{split}.inter"), "w") as f:
            f.write(INTER_HEADER + "".join(lines))
    return d


def test_item_texts_default_template_and_errors(tmp_path):
    d = write_movies(str(tmp_path / "mini"))
    texts = item_texts(os.path.join(d, "mini.item"))
    assert texts["i1"] == "Title: Toy Story. Year: 1995. Genres: Animation Children's Comedy."
    assert list(texts) == ["i1", "i2", "i3", "i4"]
    with_image = item_texts(os.path.join(d, "mini.item"), image_descriptions={"i2": "A man with a gun."})
    assert with_image["i2"].endswith("Image: A man with a gun.")
    assert with_image["i1"] == texts["i1"]
    custom = item_texts(os.path.join(d, "mini.item"), template="{movie_title} ({release_year}) {image_description}")
    assert custom["i3"] == "Casablanca (1942)"
    with pytest.raises(ValueError, match=r"brand.*mini\.item"):
        item_texts(os.path.join(d, "mini.item"), template="{brand}")
    with pytest.raises(FileNotFoundError, match="nothere.item"):
        item_texts(os.path.join(d, "nothere.item"))


def test_history_texts_are_training_only_most_recent_first(tmp_path):
    d = write_movies(str(tmp_path / "mini"))
    items = {"i1": "A", "i2": "B", "i3": "C", "i4": "D"}
    h = history_texts(os.path.join(d, "mini.train.inter"), items, ["u1", "u2", "u3", "u9"])
    assert h == {"u1": "B | A", "u2": "C", "u3": "D | A", "u9": ""}
    with pytest.raises(ValueError, match=r"mini\.train\.inter.*without a description"):
        history_texts(os.path.join(d, "mini.train.inter"), {"i1": "A"}, ["u1"])


def test_text_files_round_trip_and_name_the_bad_line(tmp_path):
    path = str(tmp_path / "t.jsonl")
    write_texts(path, "user_id", {"u1": "likes \"noir\"\nand jazz", "2": "é"})
    assert read_texts(path, "user_id") == {"u1": "likes \"noir\"\nand jazz", "2": "é"}
    with open(path, "a") as f:
        f.write('{"user_id": "u3"}\n')
    with pytest.raises(ValueError, match=r"t\.jsonl, line 3"):
        read_texts(path, "user_id")


class CountingModel:
    """The real MiniLM, counting the texts it encodes and failing on demand (a killed run)."""

    def __init__(self, model, fail_after=None):
        self.model, self.fail_after, self.encoded, self.calls = model, fail_after, 0, 0
        self.mllmrec_model_id = model.mllmrec_model_id

    def encode(self, texts, **kwargs):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        self.encoded += len(texts)
        return self.model.encode(texts, **kwargs)

    def get_sentence_embedding_dimension(self):
        return self.model.get_sentence_embedding_dimension()


def test_encode_texts_resumes_after_a_kill_and_reencodes_only_changes(tmp_path, minilm):
    texts = [f"A film about topic number {i}." for i in range(10)]
    plain = encode_texts(texts, minilm, show_progress=False)
    assert plain.shape == (10, 384) and plain.dtype == np.float32
    # Different texts, different embeddings (a constant output would pass the shape check).
    assert not np.allclose(plain[0], plain[1])

    cache = str(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        encode_texts(texts, CountingModel(minilm, fail_after=2), cache_dir=cache, chunk_size=3,
                     show_progress=False)
    assert len([f for f in os.listdir(cache) if f.endswith(".npy") and not f.startswith(".")]) == 2

    resumed = CountingModel(minilm)
    out = encode_texts(texts, resumed, cache_dir=cache, chunk_size=3, show_progress=False)
    assert resumed.encoded == 4  # chunks 3 and 4 (3 + 1 texts); chunks 1 and 2 came from the cache
    np.testing.assert_allclose(out, plain, atol=1e-5)

    again = CountingModel(minilm)
    changed = texts[:4] + ["Something else entirely."] + texts[5:]
    out2 = encode_texts(changed, again, cache_dir=cache, chunk_size=3, show_progress=False)
    assert again.encoded == 3  # only the chunk holding the changed text
    np.testing.assert_allclose(out2[[0, 1, 2, 3, 5, 6, 7, 8, 9]], out[[0, 1, 2, 3, 5, 6, 7, 8, 9]], atol=1e-6)
    assert not np.allclose(out2[4], out[4])

    # A damaged chunk is recomputed, not trusted.
    for f in os.listdir(cache):
        with open(os.path.join(cache, f), "wb") as fh:
            fh.write(b"garbage")
    fixed = CountingModel(minilm)
    np.testing.assert_allclose(encode_texts(texts, fixed, cache_dir=cache, chunk_size=3, show_progress=False),
                               plain, atol=1e-5)
    assert fixed.encoded == 10
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encode_texts(["a", 3], minilm, show_progress=False)


def test_encode_dataset_writes_recbole_features(tmp_path, minilm):
    d = write_movies(str(tmp_path / "mini"))
    out = encode_dataset(d, user_texts="history", model=minilm.mllmrec_model_id, show_progress=False)
    tokens, items = read_feature_file(out["item"])
    assert list(tokens) == ["i1", "i2", "i3", "i4"] and items.shape == (4, 384)
    ref = encode_texts(list(item_texts(os.path.join(d, "mini.item")).values()), minilm, show_progress=False)
    np.testing.assert_allclose(items, ref, atol=1e-5)
    tokens, users = read_feature_file(out["user"])
    assert list(tokens) == ["u1", "u2", "u3"]
    # u1's text is built from its training items only: Heat, then Toy Story.
    texts = item_texts(os.path.join(d, "mini.item"))
    expected = encode_texts([texts["i2"] + " | " + texts["i1"]], minilm, show_progress=False)
    np.testing.assert_allclose(users[0], expected[0], atol=1e-5)

    # Rewriting valid/test changes no user feature: the history text is training-only.
    before = open(out["user"]).read()
    with open(os.path.join(d, "mini.valid.inter"), "w") as f:
        f.write(INTER_HEADER + "u1\ti4\t4\t400\nu2\ti1\t5\t60\n")
    encode_dataset(d, user_texts="history", model=minilm.mllmrec_model_id, show_progress=False)
    assert open(out["user"]).read() == before


def test_encode_dataset_errors_name_the_file(tmp_path, minilm):
    d = write_movies(str(tmp_path / "mini"))
    prefs = str(tmp_path / "prefs.jsonl")
    write_texts(prefs, "user_id", {"u1": "likes action", "u2": "likes drama"})
    with pytest.raises(ValueError, match=r"prefs\.jsonl: no text for users \['u3'\]"):
        encode_dataset(d, user_texts=prefs, model=minilm.mllmrec_model_id, show_progress=False)
    items = str(tmp_path / "items.jsonl")
    write_texts(items, "item_id", {"i1": "a", "i2": "b", "i3": "c"})
    with pytest.raises(ValueError, match=r"items\.jsonl: no description for items \['i4'\]"):
        encode_dataset(d, item_texts=items, user_texts=None, model=minilm.mllmrec_model_id, show_progress=False)
    os.remove(os.path.join(d, "mini.train.inter"))
    os.rename(os.path.join(d, "mini.valid.inter"), os.path.join(d, "mini.inter"))
    with pytest.raises(ValueError, match=r"built from the training split .*mini\.train\.inter"):
        encode_dataset(d, user_texts="history", model=minilm.mllmrec_model_id, show_progress=False)


def test_encode_cli_with_preference_texts(tmp_path, minilm, capsys):
    d = write_movies(str(tmp_path / "mini"))
    prefs = str(tmp_path / "prefs.jsonl")
    write_texts(prefs, "user_id", {"u3": "horror", "u1": "action films", "u2": "old dramas"})
    assert cli_main(["encode", d, "--user-texts", prefs, "--user-suffix", "useremb_pref",
                     "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "mini.itememb" in printed and "mini.useremb_pref" in printed
    tokens, users = read_feature_file(os.path.join(d, "mini.useremb_pref"))
    # Rows follow the dataset's user order, not the text file's.
    assert list(tokens) == ["u1", "u2", "u3"]
    np.testing.assert_allclose(users, encode_texts(["action films", "old dramas", "horror"], minilm,
                                                   show_progress=False), atol=1e-5)
    assert cli_main(["encode", d, "--user-texts", "none", "--batch-size", "0"]) != 0
    assert "--batch-size must be >= 1" in capsys.readouterr().err


def test_shipped_ml100k_split_is_reproducible(tmp_path):
    """``prepare_movielens`` with the shipped split.json's seed rewrites the shipped files."""
    from mllmrec_pyg.datasets.movielens import prepare_movielens

    shipped = os.path.join(os.path.dirname(__file__), "..", "data", "ml-100k")
    with open(os.path.join(shipped, "split.json")) as f:
        info = json.load(f)
    out = str(tmp_path / "ml-100k")
    summary = prepare_movielens(out, seed=info["seed"], ratios=info["ratios"])
    assert summary["interactions"] == info["interactions"]
    for split in ("train", "valid", "test"):
        assert filecmp.cmp(os.path.join(out, f"ml-100k.{split}.inter"),
                           os.path.join(shipped, f"ml-100k.{split}.inter"), shallow=False), split
    with pytest.raises(FileExistsError, match="split.json"):
        prepare_movielens(out)
