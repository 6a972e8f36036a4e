"""OpenAI-compatible HTTP backend (vLLM, Ollama, llama.cpp server, SGLang, …) through
the ``openai`` client.

Requests run concurrently on a thread pool; each is retried with exponential
backoff on connection errors, timeouts, rate limits and server errors (the
client's own retries are switched off so that one policy applies). Images are sent
inline as ``data:`` URLs. A request that still fails, or a refusal (an empty
answer or ``finish_reason == "content_filter"``), raises :class:`GenerationError`
with the server, model and reason; results finished before it are kept by the
caller's store.

Chat servers are the common case (vLLM, Ollama, llama.cpp and SGLang serve
``/v1/chat/completions``; several serve nothing else), so the preference template
used when none is named is the chat template :data:`DEFAULT_PREFERENCE_TEMPLATE`.
A completion template (``--template preference-fewshot``, for a base model) still
goes to ``/v1/completions``; a server without that route gets an error saying so.
"""
import base64
import io
import mimetypes
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence

from mllmrec_pyg.reasoning.backends.base import Backend, GenerationError, GenerationSettings

#: The preference template of this backend when none is named (a chat template).
DEFAULT_PREFERENCE_TEMPLATE = "preference"


def image_data_url(image) -> str:
    """A ``data:`` URL of an image given as a file path or a ``PIL.Image``."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file {path} does not exist")
        mime = mimetypes.guess_type(path)[0] or "image/jpeg"
        with open(path, "rb") as f:
            data = f.read()
    else:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        mime, data = "image/png", buf.getvalue()
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class OpenAIBackend(Backend):
    """Generation through an OpenAI-compatible server.

    Args:
        model: the model name the server serves.
        base_url: e.g. ``http://127.0.0.1:8000/v1``.
        api_key: the key (local servers accept anything; default ``$OPENAI_API_KEY``
            or ``"EMPTY"``).
        settings: :class:`GenerationSettings`.
        concurrency: requests in flight at once.
        retries: attempts after the first one for a retryable failure.
        backoff: first retry delay in seconds (doubled each time, with jitter).
        timeout: seconds per request.
    """

    supports_images = True

    def __init__(self, model: str, base_url: str, api_key: Optional[str] = None,
                 settings: Optional[GenerationSettings] = None, concurrency: int = 8,
                 retries: int = 4, backoff: float = 1.0, timeout: float = 120.0):
        super().__init__(settings)
        import openai

        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.model = model
        self.base_url = base_url
        self.model_id = f"openai:{model}@{base_url}"
        self.concurrency = concurrency
        self.chunk_size = concurrency * 2
        self.retries = retries
        self.backoff = backoff
        self._openai = openai
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
                                    timeout=timeout, max_retries=0)

    def _retryable(self, err) -> bool:
        o = self._openai
        if isinstance(err, (o.APIConnectionError, o.APITimeoutError, o.RateLimitError)):
            return True
        return isinstance(err, o.APIStatusError) and err.status_code >= 500

    def _one(self, index: int, prompt: str, image, kind: str, stop) -> str:
        s = self.settings
        common = dict(model=self.model, max_tokens=s.max_new_tokens, temperature=s.temperature,
                      top_p=s.top_p, seed=s.seed)
        if stop:
            common["stop"] = list(stop)[:4]  # the OpenAI API accepts at most 4
        if s.repetition_penalty != 1.0:
            common["extra_body"] = {"repetition_penalty": s.repetition_penalty}
        if kind == "chat":
            content = prompt if image is None else [
                {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                {"type": "text", "text": prompt}]
            call = lambda: self.client.chat.completions.create(  # noqa: E731
                messages=[{"role": "user", "content": content}], **common)
        else:
            call = lambda: self.client.completions.create(prompt=prompt, **common)  # noqa: E731
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                response = call()
                break
            except Exception as err:  # noqa: BLE001 - classified below
                if isinstance(err, self._openai.OpenAIError) and self._retryable(err) and attempt < self.retries:
                    time.sleep(delay * (1 + random.random() * 0.25))
                    delay *= 2
                    continue
                hint = ""
                if kind != "chat" and isinstance(err, self._openai.NotFoundError):
                    hint = ("; the server has no /v1/completions route (a chat-only server?): use a chat "
                            f"template, e.g. --template {DEFAULT_PREFERENCE_TEMPLATE}")
                raise GenerationError(
                    f"{self.base_url} (model {self.model}), prompt {index}: "
                    f"{type(err).__name__}: {err} after {attempt + 1} attempt(s){hint}") from err
        choice = response.choices[0] if response.choices else None
        text = None if choice is None else (choice.message.content if kind == "chat" else choice.text)
        if choice is None or choice.finish_reason == "content_filter" or not (text or "").strip():
            reason = "no choices" if choice is None else f"finish_reason={choice.finish_reason!r}, empty={not (text or '').strip()}"
            raise GenerationError(f"{self.base_url} (model {self.model}), prompt {index}: refused ({reason})")
        return text

    def generate(self, prompts: Sequence[str], images: Optional[Sequence] = None,
                 kind: str = "chat", stop: Sequence[str] = ()) -> List[str]:
        self._check(prompts, images, kind, True)
        if images is not None and kind != "chat":
            raise ValueError("images need kind='chat'")
        images = list(images) if images is not None else [None] * len(prompts)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._one, i, p, im, kind, stop) for i, (p, im) in enumerate(zip(prompts, images))]
            results, first_error = [], None
            for f in futures:
                try:
                    results.append(f.result())
                except GenerationError as err:
                    results.append(None)
                    first_error = first_error or err
        if first_error is not None:
            # The answers that did arrive are handed over so the caller can store them.
            first_error.partial = results
            raise first_error
        return results
