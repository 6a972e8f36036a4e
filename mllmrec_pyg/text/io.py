"""JSONL text files: one ``{"<key>": "<token>", "text": "..."}`` object per line.

``key`` is ``item_id`` for item descriptions and ``user_id`` for user texts; tokens
are the dataset's original ids (as in its atomic files), so files survive
RecBole's re-indexing.
"""
import json
import os
import tempfile
from typing import Dict, Mapping

from mllmrec_pyg.text.decode import iter_lines


def read_texts(path: str, key: str) -> Dict[str, str]:
    """Reads a text file into ``{token: text}``; a malformed line, a missing field, a
    repeated token or bytes that are not UTF-8 raise ``ValueError`` naming the file and
    line (a byte-order mark is dropped: :mod:`~mllmrec_pyg.text.decode`)."""
    out: Dict[str, str] = {}
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not a JSON object ({err.msg})") from None
        if not isinstance(record, dict) or key not in record or "text" not in record:
            raise ValueError(f"{path}, line {number}: needs the fields {key!r} and 'text'")
        token, text = str(record[key]), record["text"]
        if not isinstance(text, str):
            raise ValueError(f"{path}, line {number}: 'text' must be a string")
        if token in out:
            raise ValueError(f"{path}, line {number}: {key} {token!r} appears twice")
        out[token] = text
    return out


def write_texts(path: str, key: str, texts: Mapping[str, str]) -> None:
    """Writes ``{token: text}`` atomically (temporary file in the same directory, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".texts-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for token, text in texts.items():
                f.write(json.dumps({key: str(token), "text": text}, ensure_ascii=False) + "\n")
        from mllmrec_pyg.datasets.atomic import with_umask

        os.replace(with_umask(tmp), path)
    except BaseException:
        os.unlink(tmp)
        raise
