"""The MLLM reasoning stage of MLLMRec (NOTES §1 steps 1–4): item images → text,
training-only behaviour lists → user preference paragraphs, through swappable
backends and a resumable, append-only generation store. See ``docs/reasoning.md``.

- :mod:`~mllmrec_pyg.reasoning.templates`: prompt templates and their hashes.
- :mod:`~mllmrec_pyg.reasoning.histories`: behaviour lists from the training split, cut to a token budget.
- :mod:`~mllmrec_pyg.reasoning.store`: the kill-safe JSONL store of generations.
- :mod:`~mllmrec_pyg.reasoning.backends`: OpenAI-compatible HTTP, local transformers text and image-text models.
- :mod:`~mllmrec_pyg.reasoning.runner`: generation through the store.
- :mod:`~mllmrec_pyg.reasoning.describe`: image descriptions and fused item descriptions.
- :mod:`~mllmrec_pyg.reasoning.preferences`: preference prompts and texts.
"""
from mllmrec_pyg.reasoning.backends import BackendSpec, GenerationError, GenerationSettings, make_backend
from mllmrec_pyg.reasoning.store import GenerationStore
from mllmrec_pyg.reasoning.templates import TEMPLATES, PromptTemplate, get_template

__all__ = ["BackendSpec", "GenerationError", "GenerationSettings", "make_backend", "GenerationStore",
           "TEMPLATES", "PromptTemplate", "get_template"]
