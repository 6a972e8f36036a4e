"""The ``mllmrec`` command line.

Each sub-command lives in its own module of this package (found automatically;
``describe_images.py`` registers ``describe-images``) and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the
parsed arguments, returning an exit code or ``None``).
"""
import argparse
import importlib
import pkgutil
import sys

from mllmrec_pyg.reasoning.backends.base import GenerationError


def _subcommand_modules():
    """Every module of this package not starting with ``_``, sorted by name: adding a
    sub-command is adding one file here."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mllmrec",
        description="MLLMRec: multimodal LLM reasoning and refined item-item graphs for recommendation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _subcommand_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        # Bad input: one clear line, no traceback.
        print(f"mllmrec {args.command}: error: {err}", file=sys.stderr)
        return 2
    except GenerationError as err:
        # Not bad input but a failed generation (server down, timeout, refusal): the
        # finished results are stored, so a rerun resumes.
        print(f"mllmrec {args.command}: generation failed: {err}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
