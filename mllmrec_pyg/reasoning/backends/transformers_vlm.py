"""Local image-text-to-text models (Gemma 3, Qwen2-VL, SmolVLM, LLaVA families) through
``AutoProcessor`` and ``AutoModelForImageTextToText``, from a local directory.

Each prompt becomes one user turn holding the image and the text, rendered with the
processor's chat template; a batch is padded on the left and generated at once.
"""
import os
from typing import List, Optional, Sequence

from mllmrec_pyg.reasoning.backends.base import Backend, GenerationError, GenerationSettings


def load_image(image):
    """A ``PIL.Image`` (RGB) from a path or an image; a missing or unreadable file is a
    ``FileNotFoundError``/``ValueError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image file {path} does not exist")
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"image file {path} is not a readable image ({err})") from None
    return image.convert("RGB")


class TransformersVLMBackend(Backend):
    """A local image-text-to-text model.

    Args:
        model: local model directory (weights, config and processor files).
        settings: :class:`GenerationSettings`.
        batch_size: prompts per batch.
        device: ``"cpu"``, ``"cuda"``, … (default: CUDA when available).
        dtype: torch dtype name (default ``float32`` on CPU, ``bfloat16`` on CUDA).
    """

    supports_images = True

    def __init__(self, model: str, settings: Optional[GenerationSettings] = None, batch_size: int = 4,
                 device: Optional[str] = None, dtype: Optional[str] = None):
        super().__init__(settings)
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not os.path.isdir(model):
            raise FileNotFoundError(f"image-text-to-text model {model!r}: not a local directory")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = f"hf:{os.path.abspath(model)}"
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if dtype else (torch.float32 if self.device == "cpu" else torch.bfloat16)
        self.processor = AutoProcessor.from_pretrained(model)
        self.processor.tokenizer.padding_side = "left"
        if self.processor.tokenizer.pad_token is None:
            self.processor.tokenizer.pad_token = self.processor.tokenizer.eos_token
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        self.batch_size = batch_size
        self.chunk_size = batch_size
        self._torch = torch

    def token_counter(self):
        from mllmrec_pyg.reasoning.histories import TokenizerCounter

        return TokenizerCounter(self.processor.tokenizer, self.model_id)

    def _inputs(self, prompts, images):
        content = lambda p, has_image: ([{"type": "image"}] if has_image else []) + [  # noqa: E731
            {"type": "text", "text": p}]
        texts = [self.processor.apply_chat_template([{"role": "user", "content": content(p, im is not None)}],
                                                    tokenize=False, add_generation_prompt=True)
                 for p, im in zip(prompts, images)]
        pil = [load_image(im) for im in images if im is not None]
        if not pil:
            return self.processor(text=texts, return_tensors="pt", padding=True)
        if len(pil) != len(texts):
            raise ValueError("a batch must give an image to every prompt or to none")
        try:
            return self.processor(text=texts, images=pil, return_tensors="pt", padding=True)
        except (ValueError, TypeError):
            # Idefics3/SmolVLM-style processors want one list of images per prompt.
            return self.processor(text=texts, images=[[im] for im in pil], return_tensors="pt", padding=True)

    def generate(self, prompts: Sequence[str], images: Optional[Sequence] = None,
                 kind: str = "chat", stop: Sequence[str] = ()) -> List[str]:
        self._check(prompts, images, kind, True)
        torch = self._torch
        s = self.settings
        images = list(images) if images is not None else [None] * len(prompts)
        out: List[str] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = self._inputs(prompts[start:start + self.batch_size], images[start:start + self.batch_size])
            batch = batch.to(self.device)
            if "pixel_values" in batch and batch["pixel_values"].is_floating_point():
                batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
            length = batch["input_ids"].shape[1]
            gen = dict(max_new_tokens=s.max_new_tokens, pad_token_id=self.processor.tokenizer.pad_token_id)
            if s.repetition_penalty != 1.0:
                gen["repetition_penalty"] = s.repetition_penalty
            if s.temperature > 0:
                torch.manual_seed(s.seed + start)
                gen.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            else:
                gen.update(do_sample=False)
            try:
                with torch.inference_mode():
                    ids = self.model.generate(**batch, **gen)
            except RuntimeError as err:
                raise GenerationError(f"{self.model_id}: generation failed on a batch of "
                                      f"{len(batch['input_ids'])} prompts: {err}") from err
            out.extend(self.processor.batch_decode(ids[:, length:], skip_special_tokens=True))
        return out
