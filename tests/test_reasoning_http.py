"""The OpenAI-compatible backend against a real HTTP server process on loopback
(tests/openai_server.py): concurrency, images as data URLs, retries, refusals,
unreachable servers, and the kill-and-resume property of ``mllmrec preferences``."""
import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from mllmrec_pyg.cli import main
from mllmrec_pyg.reasoning.backends import GenerationError, GenerationSettings, make_backend
from mllmrec_pyg.reasoning.store import GenerationStore

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@contextlib.contextmanager
def running_server(delay=0.0):
    """The loopback server in its own process; yields its base URL, stops it on exit."""
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "openai_server.py"), "--delay", str(delay)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def only_store(d, stem):
    """The one store ``<stem>.<model>.<hash>.store.jsonl`` a command wrote into ``d`` by default."""
    found = glob.glob(os.path.join(d, f"{stem}.*.store.jsonl"))
    assert len(found) == 1, found
    return found[0]


def stats(url):
    with urllib.request.urlopen(url + "/stats", timeout=5) as r:
        return json.loads(r.read())


def wait_idle(url, timeout=30):
    """Wait until the server has answered everything sent to it, killed clients' requests
    included: nothing in flight and the counters unchanged over 0.3 s."""
    deadline = time.time() + timeout
    before = stats(url)
    while time.time() < deadline:
        time.sleep(0.3)
        now = stats(url)
        if now["in_flight"] == 0 and now == before:
            return now
        before = now
    raise AssertionError(f"server still busy after {timeout} s: {now}")


@pytest.fixture()
def server():
    with running_server() as url:
        yield url


@pytest.fixture()
def slow_server():
    # Answers that take 0.3 s: with instant answers one request can finish before
    # the next is sent, and the overlap the concurrency check needs never happens.
    with running_server(delay=0.3) as url:
        yield url


def write_dataset(d, users=3, per_user=4, name="toy"):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{name}.item"), "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\tclass:token_seq\n")
        for i in range(1, 61):
            f.write(f"{i}\tMovie number {i}\tDrama\n")
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    with open(os.path.join(d, f"{name}.train.inter"), "w") as f:
        f.write(header)
        for u in range(users):
            for k in range(per_user):
                f.write(f"u{u}\t{u + k + 1}\t4\t{k}\n")  # distinct lists, distinct prompts
    for part in ("valid", "test"):
        with open(os.path.join(d, f"{name}.{part}.inter"), "w") as f:
            f.write(header + "".join(f"u{u}\t60\t4\t99\n" for u in range(users)))
    return d


def test_chat_completion_image_and_concurrency(slow_server, tmp_path):
    from PIL import Image

    img = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(img)
    server = slow_server
    b = make_backend("openai", "loopback", GenerationSettings(max_new_tokens=6), base_url=server, concurrency=4)
    prompts = [f"prompt {i}" for i in range(8)]
    out = b.generate(prompts)
    assert len(out) == 8 and all(o.startswith("Answer") for o in out)
    assert len(out[0].split()) == 6  # max_tokens reached the server
    assert stats(server)["max_in_flight"] > 1  # requests really ran concurrently
    with_image = b.generate(["describe"], images=[str(img)])[0]
    import hashlib
    assert f"image:{hashlib.sha256(img.read_bytes()).hexdigest()[:12]}" in with_image  # bytes arrived intact
    assert b.generate(["continue this"], kind="completion")[0].startswith("Answer")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        b.generate(["describe"], images=[str(tmp_path / "missing.png")])


def test_retry_refusal_and_failure_messages(server):
    b = make_backend("openai", "loopback", GenerationSettings(max_new_tokens=4), base_url=server,
                     backoff=0.01, retries=2)
    assert b.generate(["FLAKY one"])[0].startswith("Answer")  # 500 once, then retried
    assert stats(server)["errors"] == 1
    with pytest.raises(GenerationError, match="refused"):
        b.generate(["please REFUSE"])
    with pytest.raises(GenerationError, match=r"InternalServerError.*after 3 attempt"):
        b.generate(["BROKEN"])
    slow = make_backend("openai", "loopback", base_url=server, timeout=0.5, retries=0)
    with pytest.raises(GenerationError, match="Timeout"):
        slow.generate(["SLOW"])
    dead = make_backend("openai", "loopback", base_url="http://127.0.0.1:9/v1", retries=1, backoff=0.01)
    with pytest.raises(GenerationError, match=r"127.0.0.1:9/v1.*Connection"):
        dead.generate(["x"])


def test_preferences_cli_partial_failure_then_resume(server, tmp_path, capsys):
    d = write_dataset(str(tmp_path / "toy"), users=6)
    # A template that makes one user's prompt fail on the server: the others are stored.
    tpl = tmp_path / "t.yaml"
    tpl.write_text('text: "Items: {descriptions}. Preferences:"\n')
    args = ["preferences", d, "--backend", "openai", "--model", "loopback", "--base-url", server,
            "--template", str(tpl), "--max-new-tokens", "8", "--retries", "0", "--no-progress"]
    items = open(os.path.join(d, "toy.item")).read().replace("Movie number 8\t", "Movie BROKEN 8\t")
    open(os.path.join(d, "toy.item"), "w").write(items)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "generation failed" in err and "rerun the same command" in err and "Failed: u" in err
    store = GenerationStore(only_store(d, "toy.preferences"))
    assert 0 < len(store) < 6 and not os.path.exists(os.path.join(d, "toy.preferences.jsonl"))
    served = stats(server)["served"]
    # Fix the cause, rerun: only the missing users are generated.
    open(os.path.join(d, "toy.item"), "w").write(items.replace("Movie BROKEN 8\t", "Movie number 8\t"))
    assert main(args) == 0
    texts = [json.loads(x) for x in open(os.path.join(d, "toy.preferences.jsonl"))]
    assert sorted(t["user_id"] for t in texts) == [f"u{u}" for u in range(6)]
    assert stats(server)["served"] - served == 6 - len(store)
    rec = GenerationStore(only_store(d, "toy.preferences")).records
    assert all(r["settings"]["max_new_tokens"] == 8 and r["settings"]["seed"] == 2024 for r in rec.values())
    assert main(args) == 0  # a third run generates nothing
    assert stats(server)["served"] - served == 6 - len(store)
    manifest = tmp_path / "m.json"
    assert main(args + ["--manifest", str(manifest)]) == 0
    m = json.loads(manifest.read_text())
    assert m["users"] == 6 and m["template_hash"] and m["settings"]["max_new_tokens"] == 8
    assert m["model"] == f"openai:loopback@{server}" and m["throughput"]["generated_tokens"] > 0
    before = stats(server)["served"]
    assert main(args + ["--regenerate"]) == 0
    assert stats(server)["served"] - before == 6


def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path):
    with running_server(delay=0.15) as url:
        d = write_dataset(str(tmp_path / "toy"), users=40)
        store_path = None
        cmd = [sys.executable, "-m", "mllmrec_pyg", "preferences", d, "--backend", "openai", "--model", "loopback",
               "--base-url", url, "--template", "preference", "--concurrency", "2", "--no-progress"]
        env = dict(os.environ, PYTHONPATH=ROOT)
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            store_path = store_path or next(iter(glob.glob(os.path.join(d, "toy.preferences.*.store.jsonl"))), None)
            if store_path and sum(1 for _ in open(store_path)) >= 8:
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # no chance to clean up
        child.wait()
        killed_at = len(GenerationStore(store_path))
        assert 8 <= killed_at < 40
        served_before = wait_idle(url)["served"]  # the requests the killed client left in flight count here
        assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
        lines = open(store_path).read().splitlines()
        records = [json.loads(x) for x in lines]  # every line parses
        assert len(records) == len({r["key"] for r in records}) == 40  # nothing duplicated
        assert {r["id"] for r in records} == {f"u{u}" for u in range(40)}
        resumed = stats(url)["served"] - served_before
        assert resumed == 40 - killed_at  # only the rest was generated
        assert len(open(os.path.join(d, "toy.preferences.jsonl")).read().splitlines()) == 40


def test_describe_images_through_the_server(server, tmp_path, capsys):
    import hashlib

    from PIL import Image

    d = tmp_path / "shop"
    (d / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), (0, 0, 255)).save(d / "img" / "a.png")
    (d / "shop.item").write_text("item_id:token\ttitle:token_seq\timage:token\n"
                                 "1\tBlue cup\timg/a.png\n2\tPlate\timg/none.png\n")
    assert main(["describe-images", str(d), "--backend", "openai", "--model", "loopback", "--base-url", server,
                 "--max-new-tokens", "5", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["described"] == 1 and "item 2" in report["skipped"][0]
    text = json.loads(open(d / "shop.images.jsonl").readline())["text"]
    digest = hashlib.sha256((d / "img" / "a.png").read_bytes()).hexdigest()[:12]
    assert f"image:{digest}" in text  # the image travelled as a data URL
    items = [json.loads(x) for x in open(d / "shop.items.jsonl")]
    assert "Blue cup" in items[0]["text"] and f"image:{digest}" in items[0]["text"]
