"""An append-only, kill-safe store of generations (JSONL).

Every result is one JSON line keyed by (model id, template hash, input hash,
settings hash): the model's identity, the sha256 of the prompt template, the sha256
of the rendered input (prompt text and image bytes) and of the generation settings
(temperature, max new tokens, seed…). A changed model, template, input or setting
is a new key, so it is generated again; an unchanged one is never generated twice.

Kill safety:

- each record is written as one line, then flushed and fsync'ed before the next
  generation starts, so a killed process loses at most the batch in flight;
- a last line without its newline (the process died mid-write) is a torn record:
  it is ignored on reading and, before the next append, cut from the file and kept
  in ``<path>.torn`` for inspection, so no later record is glued to it;
- a complete line that is not a valid record (edited by hand, disk error) is
  skipped with a warning naming the file and line (``strict=True`` raises
  ``ValueError`` instead); it stays in the file untouched;
- appends hold an exclusive ``flock``, so two processes never interleave lines.
"""
import hashlib
import json
import logging
import os
import time
from typing import Dict, Iterable, Optional

try:  # POSIX only; without it appends are still line-atomic for one process.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

log = logging.getLogger(__name__)

REQUIRED = ("key", "model", "template", "input", "raw", "text")


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
        self._torn_at: Optional[int] = None  # byte offset of a torn last line
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
                self._torn_at = offset
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

    def _repair_torn(self, f) -> None:
        if self._torn_at is None:
            return
        f.seek(self._torn_at)
        fragment = f.read()
        with open(self.path + ".torn", "ab") as keep:
            keep.write(fragment + b"\n")
        f.truncate(self._torn_at)
        self._torn_at = None

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
                self._repair_torn(f)
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
