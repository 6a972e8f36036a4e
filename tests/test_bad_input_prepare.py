"""Reliability suite, ``mllmrec prepare`` (and the staged output every dataset writer
shares): corrupt, oversized, unreadable or misplaced inputs end in one line, exit 2,
nothing written; a ``kill -9`` leaves nothing that the next run does not remove."""
import fcntl
import gzip
import json
import os
import signal
import subprocess
import sys

import pytest
from bad_input import ROOT, check_bad_input, cli_env, run_cli


def reviews_json(n_users=8, n_items=9, per_user=6) -> bytes:
    rows = [json.dumps({"reviewerID": f"U{u}", "asin": f"I{(u + i) % n_items}", "overall": 4,
                        "unixReviewTime": 100 + i}) for u in range(n_users) for i in range(per_user)]
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture()
def raw(tmp_path):
    data = gzip.compress(reviews_json() * 20)
    (tmp_path / "truncated.json.gz").write_bytes(data[:len(data) // 2])
    flipped = bytearray(data)
    flipped[30] ^= 0xFF
    flipped[40] ^= 0xFF
    (tmp_path / "flipped.json.gz").write_bytes(bytes(flipped))
    (tmp_path / "plain.json.gz").write_bytes(b"not gzip at all\n")
    (tmp_path / "big.csv").write_text("U0,I0,5,1\nU1," + "x" * 200_000 + ",5,1\n")
    (tmp_path / "ok.json").write_bytes(reviews_json())
    (tmp_path / "adir.json").mkdir()
    (tmp_path / "overflow.json").write_text('{"reviewerID": "A", "asin": "B", "overall": 5, '
                                            '"unixReviewTime": 99999999999999999999999}\n')
    return tmp_path


@pytest.mark.parametrize("reviews, needles", [
    ("truncated.json.gz", ["truncated.json.gz"]),
    ("flipped.json.gz", ["corrupt"]),  # zlib.error; naming the file: see docs/robustness.md
    ("plain.json.gz", ["plain.json.gz", "line 1"]),
    ("big.csv", ["big.csv", "line 2", "field larger"]),
    ("adir.json", ["adir.json"]),
    ("missing.json", ["missing.json"]),
    ("overflow.json", ["overflow.json", "line 1", "64-bit"]),  # was an OverflowError traceback
])
def test_bad_reviews_file(raw, reviews, needles):
    check_bad_input(raw, ["prepare", "amazon", "--reviews", reviews, "--out", "out"], *needles)


def test_unreadable_input_or_unwritable_output(raw):
    if os.geteuid() != 0:
        os.chmod(raw / "ok.json", 0)
        check_bad_input(raw, ["prepare", "amazon", "--reviews", "ok.json", "--out", "out", "--k-core", "2"],
                        "ok.json", "Permission denied")
    else:  # root reads every file; /sys refuses new directories to root as well
        check_bad_input(raw, ["prepare", "amazon", "--reviews", "ok.json", "--out", "/sys/mllmrec-test/out",
                              "--k-core", "2"], "/sys/mllmrec-test")


def test_bad_option_values(raw):
    check_bad_input(raw, ["prepare", "amazon", "--reviews", "ok.json", "--out", "out", "--k-core", "-1"],
                    "--k-core")
    check_bad_input(raw, ["prepare", "amazon", "--reviews", "ok.json"], "--out", "required")


# A writer killed inside staged_directory: it holds the lock, its stage is half written.
KILLED_WRITER = """
import sys, time
from mllmrec_pyg.datasets.atomic import staged_directory
with staged_directory(sys.argv[1]) as stage:
    open(stage + "/half-written", "w").write("x")
    print("staged", flush=True)
    time.sleep(600)
"""


def test_kill_9_leftovers_are_removed_by_the_next_run(raw):
    out = raw / "out"
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], env=cli_env(), cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "staged"
        stages = [e for e in os.listdir(raw) if e.startswith(".out.tmp-")]
        assert len(stages) == 1
        # While the writer lives, its lock is held: no other run may take its stage away.
        fd = os.open(raw / ".out.lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert os.path.isdir(raw / stages[0])  # what kill -9 leaves
    done = run_cli(["prepare", "amazon", "--reviews", "ok.json", "--out", "out", "--k-core", "2"], raw)
    assert done.returncode == 0, done.stderr
    assert not [e for e in os.listdir(raw) if e.startswith(".out.")]  # stage and lock file gone
    assert os.path.isfile(out / "out.train.inter") and not os.path.exists(out / "half-written")
    assert "removed" in done.stderr and stages[0] in done.stderr


def test_killed_between_renames_restores_the_previous_output(tmp_path):
    """Killed after moving the old output aside and before renaming the new one in: the
    next writer puts the old one back (nothing is lost), and removes a dead stage."""
    from mllmrec_pyg.staging import claim_output, leftovers

    old = tmp_path / ".data.old-abcd1234"
    old.mkdir()
    (old / "dataset.json").write_text("{}")
    (tmp_path / ".data.tmp-efgh5678").mkdir()
    (tmp_path / ".data.tmp-x").mkdir()  # not a name mkdtemp makes: not ours, kept
    with claim_output(str(tmp_path / "data")):
        assert (tmp_path / "data" / "dataset.json").read_text() == "{}"
        assert leftovers(str(tmp_path / "data")) == []
        assert (tmp_path / ".data.lock").exists()
    assert sorted(os.listdir(tmp_path)) == [".data.tmp-x", "data"]  # the lock file goes with the lock


SECOND_WRITER = """
import sys
from mllmrec_pyg.datasets.atomic import staged_directory
with staged_directory(sys.argv[1]) as stage:
    open(stage + "/second", "w").write("done")
"""


def test_second_writer_waits_for_the_first_then_cleans_up_after_it(tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], env=cli_env(), cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    second = None
    try:
        assert first.stdout.readline().strip() == "staged"
        second = subprocess.Popen([sys.executable, "-c", SECOND_WRITER, str(out)], env=cli_env(), cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True)
        assert "waiting for another process writing" in second.stderr.readline()
        assert not out.exists()  # it waits; it has not written
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.wait(timeout=120) == 0, second.stderr.read()
    assert sorted(os.listdir(out)) == ["second"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the first one's stage and the lock file are gone
