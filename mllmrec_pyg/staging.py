"""One writer per output directory, and the clean-up of what a killed writer left.

A command that writes a directory ``<parent>/<name>`` all or nothing stages it in
``<parent>/.<name>.tmp-XXXXXXXX`` and renames it into place (an earlier output is
first moved aside to ``.<name>.old-XXXXXXXX``, then deleted); see
:func:`mllmrec_pyg.datasets.atomic.staged_directory`. A ``kill -9`` (or a power cut)
leaves those directories behind, and two runs writing the same output at once could
remove each other's.

:func:`claim_output` takes an exclusive lock on ``<parent>/.<name>.lock`` (``flock``;
the kernel releases it when its process dies, however it dies) and, holding it, knows
that every ``.<name>.tmp-*`` / ``.<name>.old-*`` there belongs to a run that is gone:

- a ``.tmp-`` directory is an unfinished output: deleted;
- an ``.old-`` directory is the previous output: deleted when ``<name>`` exists, moved
  back to ``<name>`` when it does not (the run died between its two renames).

A second run on the same output waits for the first one's lock (it says so on
stderr). The holder deletes the lock file when it releases the lock; a process that
locked the file while it was being deleted sees that the path no longer names the
file it holds and tries again, so two processes never both hold "the" lock. A
killed holder leaves the (empty) lock file, which the next run reuses and deletes.
Without ``fcntl`` (Windows) there is no lock and no clean-up.
"""
import logging
import os
import re
import shutil
import sys
from typing import Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

__all__ = ["OutputLock", "claim_output", "leftovers"]


class OutputLock:
    """The held lock of an output directory (:func:`claim_output`); ``release()`` ends it
    (also when used as a context manager)."""

    def __init__(self, path: str, fd: Optional[int]):
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)  # while still holding it: see the module docstring
            except FileNotFoundError:  # pragma: no cover - removed by hand
                pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _names(out_dir: str):
    parent = os.path.dirname(os.path.abspath(out_dir))
    base = os.path.basename(os.path.normpath(out_dir))
    return parent, base


def leftovers(out_dir: str):
    """``(kind, path)`` of the staging (``"tmp"``) and moved-aside (``"old"``) directories
    of ``out_dir`` in its parent, as ``tempfile.mkdtemp`` names them (8 random characters,
    so ``.a.tmp-x`` of a dataset named ``a.tmp-x`` is never taken for one of ``a``)."""
    parent, base = _names(out_dir)
    pattern = re.compile(rf"^\.{re.escape(base)}\.(tmp|old)-[A-Za-z0-9_]{{8}}$")
    if not os.path.isdir(parent):
        return []
    found = []
    for entry in sorted(os.listdir(parent)):
        match = pattern.match(entry)
        if match and os.path.isdir(os.path.join(parent, entry)):
            found.append((match.group(1), os.path.join(parent, entry)))
    return found


def _lock(lock_path: str, out_dir: str) -> int:
    """A descriptor of ``lock_path`` holding its exclusive ``flock``; waits for a holder."""
    said = False
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    print(f"waiting for another process writing {out_dir} (it holds {lock_path})", file=sys.stderr)
                    said = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the holder deleted the file we locked: lock the current one


def claim_output(out_dir: str) -> OutputLock:
    """Locks ``out_dir`` for writing (waiting while another process holds it) and removes
    the left-overs of killed runs (see the module docstring). The parent directory must
    exist. Returns the :class:`OutputLock` to release when the output is in place."""
    parent, base = _names(out_dir)
    if fcntl is None:  # pragma: no cover - Windows
        return OutputLock("", None)
    lock_path = os.path.join(parent, f".{base}.lock")
    fd = _lock(lock_path, out_dir)
    try:
        for kind, path in leftovers(out_dir):
            if kind == "old" and not os.path.lexists(out_dir):
                os.rename(path, out_dir)
                log.warning("%s: restored the previous output from %s (a run was killed while replacing it)",
                            out_dir, path)
            else:
                shutil.rmtree(path)
                log.warning("removed %s, left by a run that was killed", path)
    except BaseException:
        os.close(fd)
        raise
    return OutputLock(lock_path, fd)
