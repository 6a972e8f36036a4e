"""The image path for real: a tiny randomly initialised LLaVA (built from a config)
through the image-text-to-text backend, ``mllmrec describe-images`` (missing files,
URLs off by default, strict mode, resume) and ``mllmrec pipeline``."""
import json
import os

import pytest

from mllmrec_pyg.cli import main
from mllmrec_pyg.reasoning.backends import GenerationSettings, make_backend
from mllmrec_pyg.reasoning.describe import image_jobs
from mllmrec_pyg.reasoning.templates import TEMPLATES
from mllmrec_pyg.reasoning.store import GenerationStore
from mllmrec_pyg.reasoning.tiny_models import build_tiny_llava
from test_reasoning_http import only_store


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return build_tiny_llava(str(tmp_path_factory.mktemp("tiny-llava")))


def write_image_dataset(d):
    from PIL import Image

    os.makedirs(os.path.join(d, "img"), exist_ok=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(os.path.join(d, "img", "1.png"))
    Image.new("RGB", (30, 50), (10, 10, 200)).save(os.path.join(d, "img", "2.jpg"))
    with open(os.path.join(d, "shop.item"), "w") as f:
        f.write("item_id:token\ttitle:token_seq\tbrand:token\tcategories:token_seq\timage:token\n")
        f.write("1\tRed shoe\tAcme\tClothing|Shoes\timg/1.png\n")
        f.write("2\tBlue toy\tToyCo\tToys|Cars\timg/2.jpg\n")
        f.write("3\tGreen hat\tAcme\tClothing|Hats\timg/missing.png\n")
        f.write("4\tCup\tHomeCo\tKitchen\thttp://example.invalid/4.jpg\n")
        f.write("5\tPlate\tHomeCo\tKitchen\t\n")
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    open(os.path.join(d, "shop.train.inter"), "w").write(header + "a\t1\t5\t1\na\t2\t4\t2\nb\t3\t5\t1\nb\t4\t3\t2\n")
    open(os.path.join(d, "shop.valid.inter"), "w").write(header + "a\t5\t5\t3\n")
    open(os.path.join(d, "shop.test.inter"), "w").write(header + "b\t5\t5\t3\n")
    return d


def test_vlm_backend_batches_images(tiny_vlm, tmp_path):
    from PIL import Image

    Image.new("RGB", (20, 20), (0, 255, 0)).save(tmp_path / "g.png")
    b = make_backend("vlm", tiny_vlm, GenerationSettings(max_new_tokens=4), batch_size=2)
    out = b.generate(["describe a red shoe", "the toy", "a hat"], images=[str(tmp_path / "g.png")] * 3)
    assert len(out) == 3 and all(isinstance(o, str) and o.strip() for o in out)
    assert b.generate(["the toy"], images=[str(tmp_path / "g.png")]) == [out[1]]  # greedy: deterministic
    with pytest.raises(FileNotFoundError, match="nope.png"):
        b.generate(["x"], images=[str(tmp_path / "nope.png")])
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        b.generate(["x"], images=[str(tmp_path / "bad.png")])


def test_describe_images_cli_skips_bad_images_and_resumes(tiny_vlm, tmp_path, capsys, caplog):
    d = write_image_dataset(str(tmp_path / "shop"))
    args = ["describe-images", d, "--model", tiny_vlm, "--max-new-tokens", "4", "--category-column", "categories",
            "--no-progress"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["described"] == 2 and report["generated"] == 2
    assert any("item 3" in s and "does not exist" in s for s in report["skipped"])
    assert any("item 4" in s and "allow_urls" in s for s in report["skipped"])
    images = [json.loads(x) for x in open(os.path.join(d, "shop.images.jsonl"))]
    assert [r["item_id"] for r in images] == ["1", "2"]
    items = {json.loads(x)["item_id"]: json.loads(x)["text"] for x in open(os.path.join(d, "shop.items.jsonl"))}
    assert set(items) == {"1", "2", "3", "4", "5"}  # every item keeps its text description
    assert "Red shoe" in items["1"] and "Acme" in items["1"] and images[0]["text"] in items["1"]
    store = GenerationStore(only_store(d, "shop.images"))
    assert {r["id"] for r in store.records.values()} == {"1", "2"}
    jobs, _ = image_jobs(d, TEMPLATES["image"], category_column="categories")
    assert "relevant to Shoes," in jobs[0].prompt and "relevant to Cars," in jobs[1].prompt
    # Rerun: everything comes from the store, no model is loaded.
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["generated"] == 0
    # A changed image is new input and is described again.
    from PIL import Image
    Image.new("RGB", (40, 30), (0, 0, 0)).save(os.path.join(d, "img", "1.png"))
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["generated"] == 1
    # Strict mode names the item and file.
    assert main(args + ["--strict"]) == 2
    assert "item 3" in capsys.readouterr().err


def test_pipeline_runs_every_stage_and_skips_done_work(tiny_vlm, tmp_path, capsys):
    d = write_image_dataset(str(tmp_path / "shop"))
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text(f"""
dataset_dir: {d}
describe_images:
  backend: vlm
  model: {tiny_vlm}
  max_new_tokens: 4
  category_column: categories
preferences:
  backend: vlm
  model: {tiny_vlm}
  template: preference
  max_new_tokens: 6
  history_tokens: 200
encode:
  user_texts: preferences
""")
    assert main(["pipeline", "--config", str(cfg), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["describe_images"]["generated"] == 2 and report["preferences"]["generated"] == 2
    assert os.path.isfile(report["encode"]["item"]) and os.path.isfile(report["encode"]["user"])
    users = [json.loads(x)["user_id"] for x in open(os.path.join(d, "shop.preferences.jsonl"))]
    assert sorted(users) == ["a", "b"]
    with open(report["encode"]["user"]) as f:
        assert f.readline().startswith("uid:token\tuser_emb:float_seq")
    assert main(["pipeline", "--config", str(cfg), "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["describe_images"]["generated"] == 0 and again["preferences"]["generated"] == 0
    assert main(["pipeline", "--config", str(cfg), "--no-progress", "--regenerate", "--stages", "preferences"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert forced["preferences"]["generated"] == 2 and "describe_images" not in forced
    cfg.write_text(cfg.read_text() + "bogus: 1\n")
    assert main(["pipeline", "--config", str(cfg)]) == 2
    assert "unknown keys ['bogus']" in capsys.readouterr().err
