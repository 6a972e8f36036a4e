"""The ``mllmrec`` command line.

Each sub-command lives in its own module of this package (found automatically;
``describe_images.py`` registers ``describe-images``) and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the
parsed arguments, returning an exit code or ``None``).

Errors end as ONE line on stderr, ``mllmrec <command>: error: <cause>``, naming the
file, field or argument at fault (:func:`mllmrec_pyg.errors.error_line`):

- exit status 2: bad input (arguments, files, configuration values) or a failing
  environment (a permission, a full disk, not enough memory);
- exit status 1: a generation that failed (server down, timeout, refusal); what was
  finished is stored and a rerun resumes;
- exit status 1 with a traceback: a bug (please report it).

``--debug`` (anywhere on the command line) or the environment variable
``MLLMREC_DEBUG=1`` shows the full traceback of every error.
"""
import argparse
import importlib
import os
import pkgutil
import sys

from mllmrec_pyg.errors import error_line
from mllmrec_pyg.reasoning.backends.base import GenerationError

DEBUG_ENV = "MLLMREC_DEBUG"


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (the usage is in ``--help``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _subcommand_modules():
    """Every module of this package not starting with ``_``, sorted by name: adding a
    sub-command is adding one file here."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        PackageNotFoundError, version = Exception, None
    try:
        if version is not None:
            return version("mllmrec")
    except PackageNotFoundError:
        pass
    from mllmrec_pyg import __version__

    return __version__


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on ``parser`` and every sub-command parser below it (``SUPPRESS`` keeps
    a sub-parser from resetting a ``--debug`` given earlier on the line)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _add_debug(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mllmrec",
        description="MLLMRec: multimodal LLM reasoning and refined item-item graphs for recommendation.",
        epilog=f"On an error: one line on stderr, exit status 2 (bad input) or 1 (failed generation); "
               f"--debug or {DEBUG_ENV}=1 shows the traceback.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _subcommand_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    _add_debug(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        code = args.func(args)
    except GenerationError as err:
        if debug:
            raise
        # Not bad input but a failed generation (server down, timeout, refusal): the
        # finished results are stored, so a rerun resumes.
        print(f"mllmrec {args.command}: generation failed: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"mllmrec {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        line = None if debug else error_line(err)
        if line is None:
            raise  # a bug: the traceback is what helps
        print(f"mllmrec {args.command}: error: {line}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
