"""The generation store with two writers: real processes on one file (torn-tail repair
under the lock, concurrent appends), the run-level lock through the real command line
against the loopback OpenAI server, and the per-model default store path."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from mllmrec_pyg.reasoning.store import GenerationStore, StoreBusyError, default_store_path
from test_reasoning_http import ROOT, running_server, stats, wait_idle, write_dataset

FRAGMENT = b'{"key": "torn", "raw": "half a rec'


def _rec(key, **extra):
    return {"key": key, "id": key, "model": "m", "template": "t", "input": "i", "raw": "r", "text": "t", **extra}


def _torn_store(path, complete=5):
    GenerationStore(path).append([_rec(f"old{i}") for i in range(complete)])
    with open(path, "ab") as f:
        f.write(FRAGMENT)  # a writer killed mid-line


def _lines(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")


def _writer_in_turn(path, tag, loaded, go, done):
    store = GenerationStore(path)  # sees the torn tail
    loaded.set()
    go.wait(30)
    for batch in range(2):
        store.append([_rec(f"{tag}{batch}-{i}") for i in range(4)])
    done.set()


def test_torn_tail_is_repaired_once_when_two_processes_loaded_it(tmp_path):
    """Both processes load the store while it ends in a torn line; the first repairs it
    and appends; the second must not cut the first one's records (it did: issue 9 §3)."""
    path = str(tmp_path / "s.jsonl")
    _torn_store(path)
    ctx = multiprocessing.get_context("fork")
    events = [[ctx.Event() for _ in range(3)] for _ in range(2)]
    procs = [ctx.Process(target=_writer_in_turn, args=(path, tag, *ev)) for tag, ev in zip("ab", events)]
    for p in procs:
        p.start()
    for ev in events:
        assert ev[0].wait(30)  # both loaded the torn store
    events[0][1].set()
    assert events[0][2].wait(30)  # the first one repaired and appended
    events[1][1].set()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    store = GenerationStore(path)
    assert len(store) == 5 + 16 and not store.skipped
    assert {f"{t}{b}-{i}" for t in "ab" for b in range(2) for i in range(4)} <= set(store.records)
    lines = [x for x in _lines(path) if x]
    assert len(lines) == 21 and all(json.loads(x) for x in lines)
    with open(path + ".torn", "rb") as f:
        assert f.read() == FRAGMENT + b"\n"  # cut once, kept


def _hammer(path, tag, go, n):
    store = GenerationStore(path)
    go.wait(30)
    for i in range(n):
        store.append([_rec(f"{tag}{i}")])


def test_concurrent_appends_lose_nothing(tmp_path):
    path = str(tmp_path / "s.jsonl")
    _torn_store(path)
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_hammer, args=(path, tag, go, 40)) for tag in "xyz"]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = GenerationStore(path)
    assert len(store) == 5 + 120 and not store.skipped
    assert all(json.loads(x) for x in _lines(path) if x)
    with open(path + ".torn", "rb") as f:
        assert f.read() == FRAGMENT + b"\n"


def test_unknown_unterminated_tail_is_sealed_not_cut(tmp_path):
    """A writer dies after this store loaded a clean file: the next append must neither
    glue its record to the fragment nor cut bytes it never saw."""
    path = str(tmp_path / "s.jsonl")
    GenerationStore(path).append([_rec("a")])
    store = GenerationStore(path)
    with open(path, "ab") as f:
        f.write(FRAGMENT)
    store.append([_rec("b")])
    raw = open(path, "rb").read()
    assert FRAGMENT + b"\n" in raw and not os.path.exists(path + ".torn")
    again = GenerationStore(path)
    assert set(again.records) == {"a", "b"} and again.skipped == [2]  # the fragment: a skipped line


def _hold_lock(path, ready):
    with GenerationStore(path).run_lock("holder"):
        ready.set()
        time.sleep(60)


def test_run_lock_is_exclusive_and_dies_with_its_process(tmp_path):
    path = str(tmp_path / "s.jsonl")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, ready))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StoreBusyError, match=rf"s\.jsonl is in use by another run \(pid {holder.pid}, holder"):
            with GenerationStore(path).run_lock():
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up: the kernel drops the flock
        holder.join(30)
    with GenerationStore(path).run_lock():
        pass


def test_two_preference_runs_on_one_store_generate_each_prompt_once(tmp_path):
    """Two real `mllmrec preferences` processes on one dataset and store: the second is
    refused with one clear line while the first holds the store; the first generates
    every prompt once; a rerun afterwards reuses all of it."""
    users = 40  # 0.3 s each, two at a time: the first run lasts ~6 s, time enough for the second to start
    with running_server(delay=0.3) as url:
        d = write_dataset(str(tmp_path / "toy"), users=users)
        cmd = [sys.executable, "-m", "mllmrec_pyg", "preferences", d, "--backend", "openai", "--model", "loopback",
               "--base-url", url, "--template", "preference", "--concurrency", "2", "--no-progress"]
        env = dict(os.environ, PYTHONPATH=ROOT)
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and stats(url)["served"] == 0:
            time.sleep(0.05)  # the first run is generating, so it holds the lock
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert second.returncode == 1
        lines = [x for x in second.stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and "is in use by another run (pid" in lines[0] and "Traceback" not in second.stderr
        store_path = json.loads(out)["store"]
        assert store_path in lines[0]
        served = wait_idle(url)["served"]
        assert served == users  # each prompt generated once
        records = [json.loads(x) for x in open(store_path)]
        assert len(records) == len({r["key"] for r in records}) == users
        # The refused run, rerun: everything is reused, nothing generated.
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and json.loads(again.stdout)["generated"] == 0
        assert stats(url)["served"] == served


def test_default_store_path_per_model_and_settings(tmp_path, caplog):
    d = str(tmp_path)
    a = default_store_path(d, "toy", "preferences", "gguf:gemma-3-270m-q4_k_m.gguf@a5fd3b62230aa5ec",
                           {"max_new_tokens": 72})
    assert os.path.basename(a).startswith("toy.preferences.gemma-3-270m-q4_k_m.") and a.endswith(".store.jsonl")
    others = {default_store_path(d, "toy", "preferences", "gguf:gemma-3-270m-q4_k_m.gguf@a5fd3b62230aa5ec",
                                 {"max_new_tokens": 64}),
              default_store_path(d, "toy", "preferences", "openai:Qwen/Qwen2-7B@http://h:8000/v1",
                                 {"max_new_tokens": 72}),
              default_store_path(d, "toy", "images", "gguf:gemma-3-270m-q4_k_m.gguf@a5fd3b62230aa5ec",
                                 {"max_new_tokens": 72})}
    assert a not in others and len(others) == 3
    assert any(os.path.basename(o).startswith("toy.preferences.Qwen2-7B.") for o in others)
    # A store of an earlier version at the shared path is reused only for its own model and settings.
    legacy = os.path.join(d, "toy.preferences.store.jsonl")
    GenerationStore(legacy).append([_rec("k", model="m1", settings={"max_new_tokens": 8})])
    assert default_store_path(d, "toy", "preferences", "m1", {"max_new_tokens": 8}) == legacy
    assert default_store_path(d, "toy", "preferences", "m1", {"max_new_tokens": 9}) != legacy
    assert default_store_path(d, "toy", "preferences", "m2", {"max_new_tokens": 8}) != legacy


def test_two_models_on_one_dataset_get_two_stores(tmp_path):
    from mllmrec_pyg.cli import main

    with running_server() as url:
        d = write_dataset(str(tmp_path / "toy"), users=3)
        base = ["preferences", d, "--backend", "openai", "--base-url", url, "--template", "preference",
                "--no-progress"]
        assert main(base + ["--model", "alpha"]) == 0
        assert main(base + ["--model", "beta"]) == 0
        assert main(base + ["--model", "alpha", "--max-new-tokens", "9"]) == 0
    stores = sorted(f for f in os.listdir(d) if f.endswith(".store.jsonl"))
    assert len(stores) == 3 and sum(".alpha." in s for s in stores) == 2 and sum(".beta." in s for s in stores) == 1
    for s in stores:
        records = GenerationStore(os.path.join(d, s)).records.values()
        models = {(r["model"], r["settings"]["max_new_tokens"]) for r in records}
        assert len(models) == 1
