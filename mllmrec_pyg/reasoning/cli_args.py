"""Command-line arguments shared by ``mllmrec describe-images``, ``preferences`` and
``pipeline``: the backend and its generation settings."""
import argparse
import os

from mllmrec_pyg.reasoning.backends import KINDS, BackendSpec, GenerationSettings


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
    g.add_argument("--concurrency", type=int, help="openai: requests in flight (default 8)")
    g.add_argument("--retries", type=int, help="openai: retries of a failed request (default 4)")
    g.add_argument("--timeout", type=float, help="openai: seconds per request (default 120)")
    g.add_argument("--batch-size", type=int, help="local models: prompts per batch")
    g.add_argument("--device", help="local models: cpu, cuda, … (default: cuda when available)")
    g.add_argument("--dtype", help="local models: torch dtype (default float32 on CPU, bfloat16 on CUDA)")
    g.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    s = parser.add_argument_group("generation (recorded with every result; part of its key)")
    s.add_argument("--max-new-tokens", type=int, default=GenerationSettings.max_new_tokens)
    s.add_argument("--temperature", type=float, default=GenerationSettings.temperature, help="0 = greedy")
    s.add_argument("--top-p", type=float, default=GenerationSettings.top_p)
    s.add_argument("--seed", type=int, default=GenerationSettings.seed)
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


def dataset_name(dataset_dir: str, name=None) -> str:
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset directory {dataset_dir} does not exist")
    return name or os.path.basename(os.path.normpath(dataset_dir))
