"""Generation backends behind one small interface (:class:`~.base.Backend`).

- :class:`~.openai_http.OpenAIBackend`: any OpenAI-compatible server.
- :class:`~.transformers_text.TransformersTextBackend`: a local text LLM (GGUF included).
- :class:`~.transformers_vlm.TransformersVLMBackend`: a local image-text-to-text model.

:class:`BackendSpec` names a backend without loading it: its ``model_id`` and
``settings`` (what results are keyed by) are known at once, so a stage whose
results are all stored finishes without loading a model; :meth:`BackendSpec.load`
builds the backend when there is work.
"""
import os
from typing import Optional

from mllmrec_pyg.reasoning.backends.base import Backend, GenerationError, GenerationSettings

KINDS = ("transformers", "vlm", "openai")


def model_identity(kind: str, model: str, base_url: Optional[str] = None) -> str:
    """The ``model_id`` a backend of this kind will have, computed without loading it."""
    if kind == "transformers":
        from mllmrec_pyg.reasoning.backends.transformers_text import resolve_model

        return resolve_model(model)[2]
    if kind == "vlm":
        if not os.path.isdir(model):
            raise FileNotFoundError(f"image-text-to-text model {model!r}: not a local directory")
        return f"hf:{os.path.abspath(model)}"
    if kind == "openai":
        if not base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return f"openai:{model}@{base_url}"
    raise ValueError(f"backend must be one of {KINDS}, got {kind!r}")


def make_backend(kind: str, model: str, settings: Optional[GenerationSettings] = None, **options) -> Backend:
    """A loaded backend by name.

    Args:
        kind: ``"transformers"`` (local text LLM), ``"vlm"`` (local image-text-to-text
            model) or ``"openai"`` (OpenAI-compatible server).
        model: model directory / ``.gguf`` file / ``"gemma3-270m"``, or the served model name.
        settings: :class:`GenerationSettings`.
        options: the backend's own arguments (``batch_size``, ``device``, ``dtype`` for local
            models; ``base_url``, ``api_key``, ``concurrency``, ``retries``, ``backoff``,
            ``timeout`` for ``openai``); ``None`` values are dropped.
    """
    model_identity(kind, model, options.get("base_url"))  # validates kind and arguments
    if kind == "transformers":
        from mllmrec_pyg.reasoning.backends.transformers_text import TransformersTextBackend as cls
    elif kind == "vlm":
        from mllmrec_pyg.reasoning.backends.transformers_vlm import TransformersVLMBackend as cls
    else:
        from mllmrec_pyg.reasoning.backends.openai_http import OpenAIBackend as cls
    options = {k: v for k, v in options.items() if v is not None}
    return cls(model, settings=settings, **options)


class BackendSpec:
    """A backend named but not loaded yet (see the module docstring).

    Args: as :func:`make_backend`.
    """

    def __init__(self, kind: str, model: str, settings: Optional[GenerationSettings] = None, **options):
        self.kind, self.model = kind, model
        self.options = {k: v for k, v in options.items() if v is not None}
        self.settings = settings or GenerationSettings()
        self.model_id = model_identity(kind, model, self.options.get("base_url"))
        self._backend: Optional[Backend] = None

    def load(self) -> Backend:
        """The backend, loaded on first call."""
        if self._backend is None:
            self._backend = make_backend(self.kind, self.model, self.settings, **self.options)
            if self._backend.model_id != self.model_id:  # pragma: no cover - a programming error
                raise RuntimeError(f"model id {self._backend.model_id} != {self.model_id}")
        return self._backend

    def token_counter(self):
        """The model's tokenizer as a counter (without loading the weights); ``None`` for a server."""
        from mllmrec_pyg.reasoning.histories import TokenizerCounter

        if self._backend is not None:
            return self._backend.token_counter()
        if self.kind == "transformers":
            from mllmrec_pyg.reasoning.backends.transformers_text import load_tokenizer

            return TokenizerCounter(load_tokenizer(self.model), self.model_id)
        if self.kind == "vlm":
            from transformers import AutoTokenizer

            return TokenizerCounter(AutoTokenizer.from_pretrained(self.model), self.model_id)
        return None


__all__ = ["Backend", "BackendSpec", "GenerationError", "GenerationSettings", "make_backend",
           "model_identity", "KINDS"]
