"""An append-only, kill-safe store of generations (JSONL) that two processes cannot damage.

Every result is one JSON line keyed by (model id, template hash, input hash,
settings hash): the model's identity, the sha256 of the prompt template, the sha256
of the rendered input (prompt text and image bytes) and of the generation settings
(temperature, max new tokens, seed…). A changed model, template, input or setting
is a new key, so it is generated again; an unchanged one is never generated twice.

Kill safety (``kill -9`` at any moment):

- each record is written as one line, then flushed and fsync'ed before the next
  generation starts, so a killed process loses at most the batch in flight;
- a last line without its newline (the process died mid-write) is a torn record:
  it is ignored on reading and repaired before the next append (below);
- a complete line that is not a valid record (edited by hand, disk error) is
  skipped with a warning naming the file and line (``strict=True`` raises
  ``ValueError`` instead); it stays in the file untouched.

Two writers (two processes, or two stores on one file in one process):

- every append holds an exclusive ``flock`` on the file while it writes whole
  lines, so lines never interleave, and under that lock no live writer can be
  half-way through a line: an unterminated tail seen under the lock is torn;
- the torn-tail repair runs under that same lock and re-reads the tail first: it
  cuts the fragment (kept in ``<path>.torn``) only if the file still ends with the
  very fragment this store saw when it loaded, at the same offset. If another
  process repaired it already, nothing is cut; if the file ends in some other
  unterminated line, that line is sealed with a newline (it becomes a malformed
  line, skipped on reading) so that no record is glued to it — bytes are never
  removed that this store did not see;
- :meth:`GenerationStore.run_lock` is a run-level lock (``flock`` on
  ``<path>.lock``, released by the kernel when its process dies, so ``kill -9``
  leaves no stale lock): a run that generates into the store holds it, so two runs
  never generate the same prompts; a second run gets :class:`StoreBusyError` at
  once, naming the store and the process that holds it.
"""
import contextlib
import hashlib
import json
import logging
import os
import time
from typing import Dict, Iterable, Optional, Tuple

try:  # POSIX only; without it appends are still line-atomic for one process.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

from mllmrec_pyg.reasoning.backends.base import GenerationError

log = logging.getLogger(__name__)

REQUIRED = ("key", "model", "template", "input", "raw", "text")


class StoreBusyError(GenerationError):
    """Another process holds the run lock of a store (it is generating into it)."""


def sha256_text(*parts) -> str:
    """sha256 (hex) of the parts; ``bytes`` are hashed as is, other values as their JSON."""
    h = hashlib.sha256()
    for p in parts:
        data = p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, ensure_ascii=False).encode("utf-8")
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def record_key(model_id: str, template_hash: str, input_hash: str, settings: Optional[dict] = None) -> str:
    """The store key of one generation."""
    return sha256_text(model_id, template_hash, input_hash, settings or {})


class GenerationStore:
    """Append-only JSONL of generations.

    Args:
        path: the JSONL file (created with its directory on first append).
        strict: raise ``ValueError`` on a malformed complete line instead of skipping it.
    """

    def __init__(self, path: str, strict: bool = False):
        self.path = path
        self.strict = strict
        self.records: Dict[str, dict] = {}
        self.skipped: list = []  # line numbers of malformed lines
        self._torn: Optional[Tuple[int, bytes]] = None  # (offset, bytes) of a torn last line
        self._load()

    def reload(self) -> None:
        """Reads the file again (records another process appended since are then known)."""
        self.records, self.skipped, self._torn = {}, [], None
        self._load()

    def _load(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            data = f.read()
        offset = 0
        for number, line in enumerate(data.split(b"\n"), start=1):
            end = offset + len(line)
            complete = end < len(data)  # a newline follows
            if not line.strip():
                offset = end + 1
                continue
            if not complete:
                self._torn = (offset, line)
                log.warning("%s, line %d: torn last record (the writer was killed); it will be regenerated",
                            self.path, number)
                break
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
                    raise ValueError(f"needs the fields {list(REQUIRED)}")
                if not isinstance(record["text"], str) or not isinstance(record["raw"], str):
                    raise ValueError("'text' and 'raw' must be strings")
            except (ValueError, UnicodeDecodeError) as err:
                message = f"{self.path}, line {number}: malformed record ({err})"
                if self.strict:
                    raise ValueError(message) from None
                log.warning("%s; skipped, it will be regenerated", message)
                self.skipped.append(number)
            else:
                self.records[record["key"]] = record
            offset = end + 1

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> Optional[dict]:
        return self.records.get(key)

    def _repair_tail(self, f) -> None:
        """Makes the file end with a newline before an append; ``f`` is open ``a+b`` and
        exclusively locked, so no live writer is inside a line (see the module docstring)."""
        size = f.seek(0, os.SEEK_END)
        torn, self._torn = self._torn, None
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return  # complete (another process repaired the tail, or there was none)
        if torn is not None:
            offset, fragment = torn
            if size == offset + len(fragment):
                f.seek(offset)
                before = b"\n"
                if offset:
                    f.seek(offset - 1)
                    before = f.read(1)
                if before == b"\n" and f.read(len(fragment)) == fragment:
                    with open(self.path + ".torn", "ab") as keep:
                        keep.write(fragment + b"\n")
                        keep.flush()
                        os.fsync(keep.fileno())
                    f.truncate(offset)
                    os.fsync(f.fileno())
                    return
        # Not the fragment this store loaded: a writer died since. Cut nothing; end the
        # line so that the next record starts on its own line (the fragment is then a
        # malformed line, skipped with a warning on reading).
        log.warning("%s: ends in an unterminated line this process did not load; sealed with a newline",
                    self.path)
        f.write(b"\n")
        f.flush()
        os.fsync(f.fileno())

    def append(self, records: Iterable[dict]) -> None:
        """Appends records (each needs the fields of :data:`REQUIRED`), one fsync'ed line each."""
        records = list(records)
        for r in records:
            missing = [k for k in REQUIRED if k not in r]
            if missing:
                raise ValueError(f"record for {r.get('id', '?')!r} lacks the fields {missing}")
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        with open(self.path, "a+b") as f:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self._repair_tail(f)
                f.seek(0, os.SEEK_END)
                for r in records:
                    r.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                    f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
                    f.flush()
                    os.fsync(f.fileno())
                    self.records[r["key"]] = r
            finally:
                if fcntl is not None:
                    fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def run_lock(self, what: str = "a run"):
        """Holds the run-level lock of this store (``<path>.lock``) for the ``with`` block.

        Raises :class:`StoreBusyError` at once when another process holds it: two runs
        on one store would generate the same prompts twice. The lock file records the
        holder's pid and start time for that message; the lock itself is the ``flock``,
        which the kernel drops when the process ends, however it ends.
        """
        lock_path = self.path + ".lock"
        os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown process"
                    raise StoreBusyError(
                        f"{self.path} is in use by another run ({holder}); two runs on one store would "
                        f"generate the same prompts twice. Wait for it to finish and rerun (its results "
                        f"are then reused), or give this run another store") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}, {what}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                      .encode("utf-8"), 0)
            yield self
        finally:
            os.close(fd)  # releases the flock


def _slug(model_id: str) -> str:
    """A short readable name of a model id (``gguf:gemma-3-270m-q4_k_m.gguf@a5fd…`` →
    ``gemma-3-270m-q4_k_m``; ``openai:Qwen/Qwen2-VL-7B@http://…`` → ``Qwen2-VL-7B``)."""
    name = model_id.split(":", 1)[-1].split("@", 1)[0].rstrip("/")
    name = os.path.basename(name) or "model"
    for ext in (".gguf", ".safetensors"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    return name[:40] or "model"


def default_store_path(dataset_dir: str, name: str, stage: str, model_id: str, settings: dict) -> str:
    """The store a stage uses when none is named: ``<dataset_dir>/<name>.<stage>.<model>.<h>.store.jsonl``
    with ``<model>`` a readable name of ``model_id`` and ``<h>`` 8 hex digits of the hash of
    ``model_id`` and ``settings``, so two models, or one model with two settings, on one
    dataset never share a store (nor its run lock) by accident.

    A store written by an earlier version at the shared path ``<name>.<stage>.store.jsonl``
    is used instead when the model-specific one does not exist yet and the shared one
    holds results of this very model and settings (so they are not generated again); a
    warning says so.

    Args:
        dataset_dir, name: the dataset.
        stage: ``"preferences"``, ``"preferences.leaky"`` or ``"images"``.
        model_id: the backend's ``model_id``.
        settings: the generation settings as a dict (``GenerationSettings.as_dict()``).
    """
    tag = f"{_slug(model_id)}.{sha256_text(model_id, settings)[:8]}"
    path = os.path.join(dataset_dir, f"{name}.{stage}.{tag}.store.jsonl")
    legacy = os.path.join(dataset_dir, f"{name}.{stage}.store.jsonl")
    if not os.path.exists(path) and os.path.isfile(legacy):
        mine = any(r.get("model") == model_id and r.get("settings") == settings
                   for r in GenerationStore(legacy).records.values())
        if mine:
            log.warning("%s holds results of %s with these settings: using it (an earlier version's shared "
                        "store; new stores are named per model and settings, e.g. %s)", legacy, model_id,
                        os.path.basename(path))
            return legacy
    return path
