"""User preference paragraphs from training behaviour lists (NOTES §1 steps 3–4).

:func:`build_prompts` renders one prompt per user from the TRAINING split
(:mod:`~mllmrec_pyg.reasoning.histories`), cut to a token budget;
:func:`write_prompts` writes them with their token counts and generates nothing
(``mllmrec preferences --prompts-only``); :func:`generate_preferences` generates
the missing ones through the store and writes the user texts JSONL
(``{"user_id": ..., "text": ...}``) that ``mllmrec encode`` reads.
"""
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional

from mllmrec_pyg.reasoning.histories import WordCounter, cut_history, load_histories
from mllmrec_pyg.reasoning.runner import Job, generate_jobs
from mllmrec_pyg.reasoning.store import GenerationStore
from mllmrec_pyg.reasoning.templates import PromptTemplate, get_template
from mllmrec_pyg.text.io import read_texts, write_texts
from mllmrec_pyg.text.item_text import item_texts

log = logging.getLogger(__name__)


@dataclass
class UserPrompt:
    """One user's prompt: ``text`` is ``None`` when the user has no training item."""

    user_id: str
    text: Optional[str]
    n_items: int
    n_history: int
    tokens: Optional[int]


def item_descriptions(dataset_dir: str, name: Optional[str] = None, item_template: Optional[str] = None,
                      image_descriptions: Optional[str] = None, item_texts_file: Optional[str] = None) -> Dict[str, str]:
    """The item descriptions the behaviour lists are made of.

    Args:
        dataset_dir, name: the dataset.
        item_template: ``str.format`` template over the ``.item`` columns (see
            :func:`mllmrec_pyg.text.item_text.item_texts`); ``None``: its labelled default.
        image_descriptions: JSONL ``{"item_id", "text"}`` of image descriptions to fuse in.
        item_texts_file: a ready JSONL of item descriptions (overrides the three above).
    """
    if item_texts_file:
        return read_texts(item_texts_file, "item_id")
    name = name or os.path.basename(os.path.normpath(dataset_dir))
    images = read_texts(image_descriptions, "item_id") if image_descriptions else None
    return item_texts(os.path.join(dataset_dir, f"{name}.item"), template=item_template, image_descriptions=images)


def build_prompts(dataset_dir: str, template: PromptTemplate, descriptions: Dict[str, str], counter=None,
                  name: Optional[str] = None, history_tokens: int = 256, item_tokens: int = 48,
                  max_items: Optional[int] = None, max_prompt_tokens: Optional[int] = None,
                  leaky: bool = False, split_column: Optional[str] = None) -> List[UserPrompt]:
    """One prompt per user, from the training interactions only (unless ``leaky``).

    Args:
        dataset_dir, name: the dataset (see :func:`~mllmrec_pyg.reasoning.histories.load_histories`).
        template: the preference template (needs ``{descriptions}``).
        descriptions: ``{item token: description}``.
        counter: token counter (``None``: whitespace words).
        history_tokens: token budget of the behaviour list.
        item_tokens: per-item truncation in tokens.
        max_items: cap on the items listed.
        max_prompt_tokens: the longest whole prompt allowed; a longer one raises
            ``ValueError`` naming the user (lower ``history_tokens`` or shorten the template).
        leaky: use ALL interactions (measuring leakage only; warns).
        split_column: the split column of a dataset with a single ``.inter``.
    """
    if "descriptions" not in template.fields:
        raise ValueError(f"template {template.name!r} has no {{descriptions}} field")
    counter = counter or WordCounter()
    histories = load_histories(dataset_dir, name, leaky=leaky, split_column=split_column)
    out = []
    for user, items in histories.items():
        if not items:
            out.append(UserPrompt(user, None, 0, 0, None))
            continue
        listing, kept = cut_history(items, descriptions, counter, history_tokens, item_tokens,
                                    template.item_format, template.joiner, max_items)
        if kept == 0:
            raise ValueError(f"user {user}: not even one item fits in history_tokens={history_tokens}")
        prompt = template.render(descriptions=listing)
        tokens = counter.count(prompt)
        if max_prompt_tokens is not None and tokens > max_prompt_tokens:
            raise ValueError(f"user {user}: prompt of {tokens} tokens exceeds max_prompt_tokens={max_prompt_tokens} "
                             f"(history {history_tokens} tokens + template {template.name!r}); lower history_tokens")
        out.append(UserPrompt(user, prompt, kept, len(items), tokens))
    return out


def write_prompts(path: str, prompts: List[UserPrompt], template: PromptTemplate, counter_name: str,
                  leaky: bool = False) -> dict:
    """Writes the prompts that would be sent, one JSON object per user, atomically; returns a summary."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".prompts-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for p in prompts:
                f.write(json.dumps({"user_id": p.user_id, "prompt": p.text, "prompt_tokens": p.tokens,
                                    "items_listed": p.n_items, "items_in_history": p.n_history,
                                    "template": template.name, "template_hash": template.hash,
                                    "token_counter": counter_name, "leaky": leaky}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)  # e.g. ``path`` is a directory: leave nothing behind
        raise
    counts = [p.tokens for p in prompts if p.tokens is not None]
    return {"users": len(prompts), "empty_histories": sum(p.text is None for p in prompts),
            "prompt_tokens_total": sum(counts), "prompt_tokens_max": max(counts, default=0),
            "prompt_tokens_mean": round(sum(counts) / max(len(counts), 1), 1)}


def generate_preferences(prompts: List[UserPrompt], backend, template: PromptTemplate, store_path: str,
                         output: str, empty_text: str = "", progress: bool = True, limit: Optional[int] = None,
                         regenerate: bool = False) -> dict:
    """Generates the missing preference texts and writes ``output`` (JSONL ``user_id``/``text``).

    Args:
        prompts: from :func:`build_prompts`.
        backend: a :class:`~mllmrec_pyg.reasoning.backends.base.Backend`.
        template: the template the prompts were rendered with.
        store_path: the append-only generation store (resumable).
        output: the user texts file, written atomically (see ``limit``).
        empty_text: the text of a user with no training item (no prompt is sent).
        progress: tqdm bar.
        limit: generate at most this many users, the first ones of ``prompts`` (a partial
            run: ``output`` then holds every user whose text is known, those stored by this
            and earlier runs and those without history, so it never loses an earlier text).
        regenerate: generate every user again even when stored.

    Returns the run statistics (:class:`~mllmrec_pyg.reasoning.runner.RunStats` as a dict).
    """
    store = GenerationStore(store_path)
    jobs = [Job(p.user_id, p.text, prompt_tokens=p.tokens) for p in prompts if p.text is not None]
    empty = [p.user_id for p in prompts if p.text is None]
    if empty:
        log.warning("%d users have no training interaction; they get the text %r", len(empty), empty_text)
    partial = limit is not None and limit < len(jobs)
    records = generate_jobs(jobs[:limit] if partial else jobs, backend, template, store,
                            desc="preferences", progress=progress, regenerate=regenerate)
    stats = generate_jobs.last_stats.as_dict()
    if partial:
        from mllmrec_pyg.reasoning.store import record_key, sha256_text

        settings = backend.settings.as_dict()
        for p in prompts[limit:]:
            if p.text is not None and p.user_id not in records:
                records[p.user_id] = store.get(record_key(backend.model_id, template.hash,
                                                          sha256_text(p.text, None), settings))
    texts = {p.user_id: (records[p.user_id]["text"] if p.text is not None else empty_text) for p in prompts
             if p.text is None or records.get(p.user_id) is not None}
    write_texts(output, "user_id", texts)
    stats["written"] = output
    stats["users_written"] = len(texts)
    stats["partial"] = len(texts) < len(prompts)
    return stats


def write_manifest(path: str, prompts: List[UserPrompt], backend, template: PromptTemplate, store_path: str,
                   output: str, dataset_dir: str, extra: Optional[dict] = None) -> dict:
    """Writes (atomically) and returns the provenance of a preference texts file: model,
    template and its hash, generation settings, the dataset's split (``split.json``
    when present), date, and the throughput summed over the store records behind the
    texts (so it is right across resumed runs: each record carries its batch's wall
    time and size).

    Args:
        path: the manifest JSON.
        prompts: the prompts of the texts (:func:`build_prompts`).
        backend: the backend or spec (``model_id``, ``settings``).
        template: the preference template.
        store_path, output: the store and the texts file.
        dataset_dir: the dataset (its ``split.json`` is copied in).
        extra: more fields (e.g. history budget and item template).
    """
    import hashlib
    import time

    from mllmrec_pyg.reasoning.store import GenerationStore, record_key, sha256_text

    store = GenerationStore(store_path)
    settings = backend.settings.as_dict()
    records = [store.get(record_key(backend.model_id, template.hash, sha256_text(p.text, None), settings))
               for p in prompts if p.text is not None]
    missing = sum(r is None for r in records)
    if missing:
        raise ValueError(f"{store_path}: {missing} users have no stored text yet; generate them first")
    seconds = sum(r["batch_seconds"] / r["batch_size"] for r in records)
    prompt_tokens = sum(r.get("prompt_tokens") or 0 for r in records)
    generated = sum(r.get("generated_tokens") or 0 for r in records)
    split_file = os.path.join(dataset_dir, "split.json")
    with open(output, "rb") as f:
        texts_sha = hashlib.sha256(f.read()).hexdigest()
    manifest = {
        "texts": os.path.basename(output), "texts_sha256": texts_sha, "store": os.path.basename(store_path),
        "users": len(prompts), "users_without_history": sum(p.text is None for p in prompts),
        "model": backend.model_id, "backend": getattr(backend, "kind", type(backend).__name__),
        "template": template.name, "template_hash": template.hash, "template_text": template.text,
        "settings": settings, "leaky": False,
        "split": json.load(open(split_file)) if os.path.isfile(split_file) else None,
        # The generation date (newest record), not the date this manifest was rewritten.
        "date": max((r.get("created", "")[:10] for r in records), default="") or time.strftime("%Y-%m-%d"),
        "throughput": {
            "generation_seconds": round(seconds, 1), "prompt_tokens": prompt_tokens, "generated_tokens": generated,
            "prompt_tokens_per_s": round(prompt_tokens / seconds, 2) if seconds else None,
            "generated_tokens_per_s": round(generated / seconds, 2) if seconds else None,
            "users_per_minute": round(60 * len(records) / seconds, 2) if seconds else None,
            "batch_size": max((r["batch_size"] for r in records), default=None),
            "note": "wall time of the generate() calls summed over batches (model loading excluded)"},
        **(extra or {}),
    }
    if os.path.isfile(path):
        try:
            previous = json.load(open(path, encoding="utf-8"))
        except ValueError:
            previous = {}
        if previous.get("texts_sha256") == texts_sha:
            # Same texts: keep fields added by hand (e.g. notes on the machine of the run).
            manifest = {**manifest, **{k: v for k, v in previous.items() if k not in manifest}}
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
    return manifest
