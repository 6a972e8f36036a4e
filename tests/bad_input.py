"""Helpers of the reliability suite (tests/test_bad_input_*.py): run the REAL command
line in a subprocess and check what a user sees on bad input.

Each case asserts that the command exits with status 2, prints exactly one line on
stderr that names the cause (and the file or argument), prints no traceback, and
creates or changes no file under the case's directory.
"""
import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def cli_env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("MLLMREC_DEBUG", None)
    env.update(extra)
    return env


def run_cli(args, cwd, env=None, user=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m mllmrec_pyg ARGS`` in ``cwd``; ``user`` runs it as that uid (root only)."""
    return subprocess.run([sys.executable, "-m", "mllmrec_pyg", *map(str, args)], cwd=str(cwd),
                          env=env or cli_env(), capture_output=True, text=True, timeout=timeout,
                          user=user)


def snapshot(root) -> dict:
    """``{relative path: (kind, size, sha256)}`` of everything under ``root``."""
    out = {}
    for directory, dirs, files in os.walk(str(root)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for d in dirs:
            out[os.path.relpath(os.path.join(directory, d), str(root))] = ("dir", None, None)
        for f in files:
            path = os.path.join(directory, f)
            try:
                with open(path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
            except PermissionError:  # an unreadable input of a permission case
                digest = None
            out[os.path.relpath(path, str(root))] = ("file", os.path.getsize(path), digest)
    return out


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, one ``mllmrec ...: error: ...`` line on stderr holding every needle,
    no traceback. Returns the line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("mllmrec") and ": error: " in line, line
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def check_bad_input(root, args, *needles, cwd=None, user=None, env=None) -> str:
    """Runs ``mllmrec ARGS`` in ``cwd`` (default ``root``) and asserts a one-line error
    holding ``needles`` and nothing created or changed under ``root``. Returns the line."""
    before = snapshot(root)
    proc = run_cli(args, cwd or root, user=user, env=env)
    line = assert_one_line_error(proc, *needles)
    assert snapshot(root) == before, f"{args}: files changed on bad input"
    return line


HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_toy(d, name="toy", users=6, items=10):
    """A tiny pre-split RecBole dataset: ``<name>.item`` and train/valid/test ``.inter``."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{name}.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\tmovie_title:token_seq\tclass:token_seq\n")
        for i in range(items):
            f.write(f"{i}\tMovie number {i}\tDrama\n")
    for part, rows in (("train", 3), ("valid", 1), ("test", 1)):
        with open(os.path.join(d, f"{name}.{part}.inter"), "w", encoding="utf-8") as f:
            f.write(HEADER)
            for u in range(users):
                for k in range(rows):
                    t = k if part == "train" else (10 if part == "valid" else 20)
                    f.write(f"u{u}\t{(u + k + (5 if part != 'train' else 0)) % items}\t4\t{t}\n")
    return str(d)
