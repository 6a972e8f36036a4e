"""Command-line arguments shared by ``mllmrec describe-images``, ``preferences`` and
``pipeline``: the backend, its generation settings, and the range of every number.

:data:`NUMBERS` is the one table of numeric settings and their ranges; the command-line
parsers (argparse ``type``) and the pipeline YAML (:func:`check_number`) both check
against it, so ``--retries -1`` and ``retries: -1`` fail the same way, naming the
argument or key.
"""
import argparse
import math
import os
from dataclasses import dataclass
from typing import Optional

from mllmrec_pyg.errors import InputError
from mllmrec_pyg.reasoning.backends import KINDS, BackendSpec, GenerationSettings


@dataclass(frozen=True)
class Number:
    """A numeric setting: ``kind`` (``int`` or ``float``) with ``low <= value`` (``low <
    value`` when ``low_open``) and ``value <= high``; ``None`` bounds are open."""

    kind: type
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None:
            what += f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            what += f"{' and' if self.low is not None else ''} <= {self.high:g}"
        return what

    def parse(self, value, what: str):
        """``value`` (a string from the command line or a YAML value) as ``kind``;
        :class:`InputError` naming ``what`` when it is not one, or out of range."""
        bad = InputError(None, f"{what}: expected {self.describe()}, got {value!r}")
        if isinstance(value, bool):
            raise bad
        try:
            if self.kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise bad
                number = int(value) if not isinstance(value, str) else int(value.strip(), 10)
            else:
                number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise bad from None
        if isinstance(number, float) and not math.isfinite(number):
            raise bad
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            raise bad
        if self.high is not None and number > self.high:
            raise bad
        return number

    def argtype(self, flag: str):
        """An argparse ``type`` (its error names ``flag`` through argparse)."""
        def parse(text):
            try:
                return self.parse(text, flag)
            except InputError:
                raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        parse.__name__ = flag
        return parse


NUMBERS = {
    # backend
    "concurrency": Number(int, 1), "retries": Number(int, 0), "timeout": Number(float, 0, low_open=True),
    "batch_size": Number(int, 1), "threads": Number(int, 1),
    # generation settings
    "max_new_tokens": Number(int, 1), "temperature": Number(float, 0), "top_p": Number(float, 0, 1, low_open=True),
    "seed": Number(int), "repetition_penalty": Number(float, 0, low_open=True),
    # behaviour lists and runs
    "history_tokens": Number(int, 1), "item_tokens": Number(int, 1), "max_items": Number(int, 1),
    "max_prompt_tokens": Number(int, 1), "limit": Number(int, 1),
}


def number_arg(flag: str):
    """The argparse ``type`` of ``--some-flag`` from :data:`NUMBERS` (``some_flag``)."""
    return NUMBERS[flag.lstrip("-").replace("-", "_")].argtype(flag)


def check_number(key: str, value, what: str):
    """``value`` of the setting ``key`` checked against :data:`NUMBERS`; ``what`` names it
    in the error (e.g. ``"pipe.yaml: preferences.history_tokens"``)."""
    return NUMBERS[key].parse(value, what)


def add_backend_args(parser: argparse.ArgumentParser, default_kind: str, default_model) -> None:
    g = parser.add_argument_group("backend")
    g.add_argument("--backend", choices=KINDS, default=default_kind,
                   help=f"transformers: local text LLM; vlm: local image-text-to-text model; "
                        f"openai: OpenAI-compatible server (default {default_kind})")
    g.add_argument("--model", default=default_model,
                   help="model directory, .gguf file or 'gemma3-270m' (bundled); for openai the served name"
                        + (f" (default {default_model})" if default_model else ""))
    g.add_argument("--base-url", help="openai: server URL, e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--api-key", help="openai: API key (default $OPENAI_API_KEY or 'EMPTY')")
    g.add_argument("--concurrency", type=number_arg("--concurrency"), help="openai: requests in flight (default 8)")
    g.add_argument("--retries", type=number_arg("--retries"), help="openai: retries of a failed request (default 4)")
    g.add_argument("--timeout", type=number_arg("--timeout"), help="openai: seconds per request (default 120)")
    g.add_argument("--batch-size", type=number_arg("--batch-size"), help="local models: prompts per batch")
    g.add_argument("--device", help="local models: cpu, cuda, … (default: cuda when available)")
    g.add_argument("--dtype", help="local models: torch dtype (default float32 on CPU, bfloat16 on CUDA)")
    g.add_argument("--threads", type=number_arg("--threads"), help="CPU threads for torch (default: torch's choice)")
    s = parser.add_argument_group("generation (recorded with every result; part of its key)")
    s.add_argument("--max-new-tokens", type=number_arg("--max-new-tokens"), default=GenerationSettings.max_new_tokens)
    s.add_argument("--temperature", type=number_arg("--temperature"), default=GenerationSettings.temperature,
                   help="0 = greedy")
    s.add_argument("--top-p", type=number_arg("--top-p"), default=GenerationSettings.top_p)
    s.add_argument("--seed", type=number_arg("--seed"), default=GenerationSettings.seed)
    s.add_argument("--repetition-penalty", type=float, default=GenerationSettings.repetition_penalty)


def default_preference_template(kind: str) -> str:
    """The preference template used when none is named: a chat template for an OpenAI-
    compatible server (chat servers may lack ``/v1/completions``), the few-shot completion
    template for local models (the bundled Gemma 3 270M is a base model)."""
    if kind == "openai":
        from mllmrec_pyg.reasoning.backends.openai_http import DEFAULT_PREFERENCE_TEMPLATE

        return DEFAULT_PREFERENCE_TEMPLATE
    return "preference-fewshot"


def backend_from_config(cfg: dict) -> BackendSpec:
    """A :class:`BackendSpec` from a mapping with the keys of :func:`add_backend_args`
    (underscored, e.g. ``max_new_tokens``)."""
    # Numbers checked against NUMBERS, the error naming the key (--repetition-penalty too).
    cfg = {k: (check_number(k, v, k) if k in NUMBERS and v is not None else v) for k, v in cfg.items()}
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg["threads"]))
    if not cfg.get("model"):
        raise ValueError("no model given (--model, or 'model' in the config)")
    settings = GenerationSettings(**{k: cfg[k] for k in ("max_new_tokens", "temperature", "top_p", "seed",
                                                         "repetition_penalty") if cfg.get(k) is not None})
    kind = cfg.get("backend", "transformers")
    local = dict(batch_size=cfg.get("batch_size"), device=cfg.get("device"), dtype=cfg.get("dtype"))
    remote = dict(base_url=cfg.get("base_url"), api_key=cfg.get("api_key"), concurrency=cfg.get("concurrency"),
                  retries=cfg.get("retries"), timeout=cfg.get("timeout"))
    return BackendSpec(kind, cfg["model"], settings, **(remote if kind == "openai" else local))


def check_item_template_file(item_file: str, template: str, what: str) -> None:
    """Checks an item template against the columns of ``item_file`` (its header line)
    before anything is read or generated (:func:`~mllmrec_pyg.reasoning.templates.check_item_template`);
    a missing file is left to the reader, which names it."""
    from mllmrec_pyg.errors import reading
    from mllmrec_pyg.reasoning.templates import check_item_template

    if not os.path.isfile(item_file):
        return
    with reading(item_file):
        with open(item_file, encoding="utf-8-sig") as f:
            header = f.readline().rstrip("\r\n")
    columns = [c.split(":")[0] for c in header.split("\t") if c]
    check_item_template(template, columns + ["image_description"], what)


def dataset_name(dataset_dir: str, name=None) -> str:
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset directory {dataset_dir} does not exist")
    return name or os.path.basename(os.path.normpath(dataset_dir))
