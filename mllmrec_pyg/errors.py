"""Errors caused by input, and the one line each of them becomes at the command line.

Library code raises :class:`InputError` (a ``ValueError``) for bad input; it carries
the file (``path``) and, where known, the line, so the message always names them.
Errors raised by the standard library and by the readers we use (``OSError`` with its
``filename``, ``UnicodeDecodeError``, ``csv.Error``, ``zlib.error``, ``yaml.YAMLError``,
``MemoryError``, ...) are turned into one line by :func:`error_line`; :func:`reading`
attaches a file to those raised while it is read.

The ``mllmrec`` command (:func:`mllmrec_pyg.cli.main`) prints ``error_line(err)`` as
``mllmrec <command>: error: <line>`` and exits with status 2; anything else is a bug
and keeps its traceback. ``--debug`` (or ``MLLMREC_DEBUG=1``) shows the traceback of
every error.
"""
import contextlib
import csv
import zlib
from typing import Iterator, Optional

__all__ = ["InputError", "error_line", "reading", "about"]


class InputError(ValueError):
    """Bad input, naming its file (and line).

    Args:
        path: the file or directory the problem is in (``None``: not a file).
        message: what is wrong and, where useful, how to fix it.
        line: the 1-based line of ``path``, when known.
    """

    def __init__(self, path: Optional[str], message: str, line: Optional[int] = None):
        self.path, self.message, self.line = path, message, line
        where = f"{path}, line {line}" if path and line else (path or "")
        super().__init__(f"{where}: {message}" if where else message)


def _yaml_error():
    try:
        import yaml
    except ImportError:  # pragma: no cover - yaml is a dependency
        return ()
    return (yaml.YAMLError,)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _yaml_line(err) -> str:
    """``yaml.MarkedYAMLError`` as ``<file>, line L, column C: <problem>``."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    if mark is None:
        return f"not valid YAML ({_one_line(problem)})"
    where = "" if mark.name in (None, "<unicode string>", "<byte string>", "<file>") else f"{mark.name}, "
    return f"{where}line {mark.line + 1}, column {mark.column + 1}: not valid YAML ({_one_line(problem)})"


def error_line(err: BaseException) -> Optional[str]:
    """One line naming the cause of ``err`` when it is caused by input or the
    environment (a file, an argument, a configuration value, memory); ``None`` for an
    error that is a bug (its traceback is what helps then)."""
    if isinstance(err, OSError) and getattr(err, "filename", None) is not None:
        # FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ENOSPC, ...
        names = f"{err.filename} -> {err.filename2}" if err.filename2 else f"{err.filename}"
        reason = err.strerror or type(err).__name__
        return f"{names}: {reason}" if str(err.filename) not in reason else _one_line(reason)
    if isinstance(err, _yaml_error()):
        return _yaml_line(err)
    if isinstance(err, UnicodeDecodeError):
        return (f"not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                f"re-save the file as UTF-8")
    if isinstance(err, (zlib.error, EOFError)) or type(err).__name__ == "BadGzipFile":
        kind = "zlib.error" if isinstance(err, zlib.error) else type(err).__name__
        return f"corrupt or truncated compressed data ({kind}: {_one_line(err)})"
    if isinstance(err, csv.Error):
        return f"not a readable CSV file ({_one_line(err)})"
    if isinstance(err, MemoryError):
        return ("not enough memory" + (f" ({_one_line(err)})" if str(err) else "")
                + "; is a size declared in the input wrong?")
    if isinstance(err, OverflowError):
        return f"a number is out of range ({_one_line(err)})"
    if isinstance(err, (ValueError, TypeError, OSError)):
        # Our own checks raise ValueError/TypeError with a message that names the file,
        # field or argument (InputError, OutputExistsError, ...).
        return _one_line(err) or type(err).__name__
    return None


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """Names ``path`` in errors raised while it is read: a decoding, parsing or memory
    error of the block becomes an :class:`InputError` on ``path`` (messages that name
    ``path`` already, and ``OSError`` with a file name, pass unchanged)."""
    try:
        yield
    except InputError:
        raise
    except (ValueError, csv.Error, zlib.error, EOFError, OSError, OverflowError, MemoryError) + _yaml_error() as err:
        if isinstance(err, OSError) and err.filename is not None:
            raise
        if str(path) in str(err) and isinstance(err, ValueError):
            raise
        line = error_line(err)
        if line.startswith(str(path)):  # e.g. YAML errors name the stream they read
            raise InputError(None, line) from err
        raise InputError(path, line) from err


@contextlib.contextmanager
def about(what: str) -> Iterator[None]:
    """Names ``what`` (an argument such as ``"--template"`` or a configuration key) in
    the input errors raised in the block: ``<what>: <cause>``."""
    try:
        yield
    except Exception as err:
        line = error_line(err)
        if line is None or line.startswith(what):
            raise
        raise InputError(None, f"{what}: {line}") from err
