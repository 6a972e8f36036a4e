"""The worker processes of ``compare --jobs K`` and ``grid --jobs K``.

Each run trains in a fresh *spawned* interpreter (``fork`` would copy the parent's
torch threads and RecBole's global logger), one run per process. A worker also
leaves when its parent does: a pool's workers are not killed with their parent,
so a sweep stopped with ``kill`` (or killed by the OOM killer) would otherwise leave
its workers training on, unseen, holding the cores the ``--resume`` of the same
sweep then needs, and their results would go nowhere.
"""
import multiprocessing
import os
import threading
import time

__all__ = ["worker_pool"]


def _exit_with_parent(parent: int, poll: float) -> None:
    """Pool initializer: a daemon thread ends this process once ``parent`` is gone
    (the process is then re-parented, so ``os.getppid()`` changes)."""

    def watch():
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(1)  # no clean-up: the run's results have nowhere to go

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(jobs: int, poll: float = 1.0):
    """A ``spawn`` :class:`multiprocessing.pool.Pool` of ``jobs`` processes, one task
    per process, whose workers exit within ``poll`` seconds of this process's death."""
    return multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=1, initializer=_exit_with_parent,
                                                     initargs=(os.getpid(), poll))
