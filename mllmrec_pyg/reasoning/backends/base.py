"""The small interface every generation backend implements.

A backend turns a list of prompts (and, for image models, one image per prompt)
into a list of generated texts, in order. ``model_id`` names the model for the
store key; ``settings`` are the generation settings recorded with every result.
"""
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence


class GenerationError(RuntimeError):
    """A backend could not produce a result (unreachable server, timeout, refusal,
    out of memory…). Finished results are already in the store; rerunning resumes."""


@dataclass(frozen=True)
class GenerationSettings:
    """Generation settings, recorded with every result and part of its store key.

    Args:
        max_new_tokens: at most this many generated tokens.
        temperature: 0 for greedy decoding; > 0 samples.
        top_p: nucleus sampling mass (used when ``temperature > 0``).
        seed: seeds sampling (per batch, so a resumed run samples the same way).
        repetition_penalty: > 1 discourages repeating tokens (local backends; servers
            that accept it as an extra field); 1 = off.
    """

    max_new_tokens: int = 80
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 2024
    repetition_penalty: float = 1.0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    def as_dict(self) -> dict:
        return asdict(self)


class Backend:
    """Base class of generation backends.

    Attributes:
        model_id: identity of the model (path, file hash or server model name).
        settings: the :class:`GenerationSettings` used for every call.
        supports_images: whether ``generate`` accepts images.
        chunk_size: how many prompts the caller should hand over at once (results
            are stored after each chunk, so this is also the work a kill may lose).
    """

    model_id: str = "?"
    supports_images: bool = False
    chunk_size: int = 8

    def __init__(self, settings: Optional[GenerationSettings] = None):
        self.settings = settings or GenerationSettings()

    def generate(self, prompts: Sequence[str], images: Optional[Sequence] = None,
                 kind: str = "chat", stop: Sequence[str] = ()) -> List[str]:
        """Generated texts, one per prompt, in order.

        Args:
            prompts: prompt texts.
            images: ``None``, or one image per prompt (a file path or ``PIL.Image``);
                only for backends with ``supports_images``.
            kind: ``"chat"`` (the prompt is a user message) or ``"completion"``
                (raw text to continue).
            stop: strings at which a generation may end early (a hint to save time;
                the caller still cuts the text at them).
        """
        raise NotImplementedError

    def load(self) -> "Backend":
        """The backend itself (a :class:`~mllmrec_pyg.reasoning.backends.BackendSpec` loads here)."""
        return self

    def token_counter(self):
        """A token counter (``count``/``truncate``) for this model, or ``None``."""
        return None

    def describe(self) -> dict:
        """What is recorded about the backend with every result."""
        return {"backend": type(self).__name__, "model": self.model_id, **self.settings.as_dict()}

    @staticmethod
    def _check(prompts, images, kind, supports_images):
        if kind not in ("chat", "completion"):
            raise ValueError(f"kind must be 'chat' or 'completion', got {kind!r}")
        if images is not None:
            if not supports_images:
                raise ValueError("this backend does not take images")
            if len(images) != len(prompts):
                raise ValueError(f"{len(images)} images for {len(prompts)} prompts")
