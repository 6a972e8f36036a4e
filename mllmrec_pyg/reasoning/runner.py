"""Generation through the store: only missing results are generated, each finished
chunk is stored before the next starts, and a failure leaves a resumable state."""
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from mllmrec_pyg.reasoning.backends.base import Backend, GenerationError
from mllmrec_pyg.reasoning.histories import WordCounter
from mllmrec_pyg.reasoning.store import GenerationStore, record_key, sha256_text
from mllmrec_pyg.reasoning.templates import PromptTemplate

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One generation: ``id`` (a user or item token), the rendered ``prompt``, an
    optional ``image`` (file path), ``image_bytes`` hashed into the input key, and
    ``prompt_tokens`` when counted."""

    id: str
    prompt: str
    image: Optional[str] = None
    image_hash: Optional[str] = None
    prompt_tokens: Optional[int] = None
    key: str = field(default="", repr=False)


@dataclass
class RunStats:
    """What a run did: results reused from the store, generated now, token counts and wall time."""

    reused: int = 0
    generated: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        if self.seconds > 0:
            d["prompt_tokens_per_s"] = round(self.prompt_tokens / self.seconds, 2)
            d["generated_tokens_per_s"] = round(self.generated_tokens / self.seconds, 2)
            d["prompts_per_s"] = round(self.generated / self.seconds, 4)
        return d


def generate_jobs(jobs: Sequence[Job], backend: Backend, template: PromptTemplate, store: GenerationStore,
                  counter=None, desc: str = "generate", progress: bool = True,
                  regenerate: bool = False) -> Dict[str, dict]:
    """Generates every job whose result is not in ``store`` yet; returns ``{job id: record}``.

    Args:
        jobs: the jobs (ids unique).
        backend: a :class:`Backend`, or a :class:`~mllmrec_pyg.reasoning.backends.BackendSpec`
            loaded only when some result is missing.
        template: the template the prompts were rendered with (its hash keys the results;
            its kind, stop strings and post-processing apply).
        store: the :class:`GenerationStore`.
        counter: token counter for the throughput figures (``None``: the backend's, if any).
        desc: progress-bar label.
        progress: show a tqdm bar (rate and ETA).
        regenerate: generate every job again even when stored (the new records are
            appended; on reading, the last record of a key wins).

    The run's :class:`RunStats` is in ``generate_jobs.last_stats``. A backend failure
    raises :class:`GenerationError` saying how many results are stored and that a rerun
    resumes. When some result is missing the run holds the store's run lock
    (:meth:`GenerationStore.run_lock`) until it ends; another run on the same store then
    raises :class:`~mllmrec_pyg.reasoning.store.StoreBusyError` instead of generating the
    same prompts. A run with nothing to generate takes no lock.
    """
    settings = backend.settings.as_dict()
    seen = set()
    for job in jobs:
        if job.id in seen:
            raise ValueError(f"job id {job.id!r} appears twice")
        seen.add(job.id)
        job.key = record_key(backend.model_id, template.hash, sha256_text(job.prompt, job.image_hash), settings)
    stats = RunStats()

    def missing():
        # Two jobs with the same input (e.g. users with identical lists) share one generation.
        return list({j.key: j for j in reversed(jobs) if regenerate or j.key not in store}.values())

    pending = missing()
    with contextlib.ExitStack() as held:
        if pending:
            # The run lock, then the store read again: what another run stored meanwhile
            # is reused, and no other run can start generating the same prompts.
            held.enter_context(store.run_lock(desc))
            store.reload()
            pending = missing()
        return _generate(jobs, pending, backend, template, store, counter, desc, progress, regenerate, settings,
                         stats)


def _generate(jobs, pending, backend, template, store, counter, desc, progress, regenerate, settings, stats):
    from tqdm.auto import tqdm

    stats.reused = 0 if regenerate else sum(j.key in store for j in jobs)
    if stats.reused:
        log.info("%s: %d of %d results already in %s", desc, stats.reused, len(jobs), store.path)
    # Similar lengths in one batch waste less padding.
    pending.sort(key=lambda j: (j.prompt_tokens or len(j.prompt), j.id))
    if pending:
        backend = backend.load()
        # Without a tokenizer (a remote server) throughput is counted in words.
        counter = counter or backend.token_counter() or WordCounter()
    bar = tqdm(total=len(pending), desc=desc, unit="prompt", disable=not progress)
    start = time.perf_counter()
    try:
        for first in range(0, len(pending), backend.chunk_size if pending else 1):
            chunk = pending[first:first + backend.chunk_size]
            images = [j.image for j in chunk] if any(j.image for j in chunk) else None
            t0 = time.perf_counter()
            try:
                raws: List[Optional[str]] = backend.generate([j.prompt for j in chunk], images=images,
                                                             kind=template.kind, stop=template.stop)
                failure = None
            except GenerationError as err:
                raws, failure = getattr(err, "partial", None) or [None] * len(chunk), err
            seconds = time.perf_counter() - t0
            records = []
            for job, raw in zip(chunk, raws):
                if raw is None:
                    continue
                prompt_tokens = job.prompt_tokens if job.prompt_tokens is not None else counter.count(job.prompt)
                new_tokens = counter.count(raw)
                records.append({
                    "key": job.key, "id": job.id, "model": backend.model_id, "template": template.hash,
                    "template_name": template.name, "input": sha256_text(job.prompt, job.image_hash),
                    "settings": settings, "backend": type(backend).__name__,
                    "prompt_tokens": prompt_tokens, "generated_tokens": new_tokens, "token_counter": counter.name,
                    "batch_seconds": round(seconds, 3), "batch_size": len(chunk),
                    "raw": raw, "text": template.postprocess(raw)})
                stats.prompt_tokens += prompt_tokens or 0
                stats.generated_tokens += new_tokens or 0
            store.append(records)
            stats.generated += len(records)
            bar.update(len(records))
            elapsed = time.perf_counter() - start
            bar.set_postfix(gen_tok_s=f"{stats.generated_tokens / max(elapsed, 1e-9):.1f}")
            if failure is not None:
                failed = [j.id for j, raw in zip(chunk, raws) if raw is None]
                raise GenerationError(
                    f"{failure}\nFailed: {', '.join(failed[:10])}{' …' if len(failed) > 10 else ''}. "
                    f"{len(store)} results are stored in {store.path}; "
                    f"{len(pending) - stats.generated} remain. Fix the cause and rerun the same command "
                    f"to generate only those.") from failure
    finally:
        bar.close()
        stats.seconds = time.perf_counter() - start
        generate_jobs.last_stats = stats
    return {j.id: store.get(j.key) for j in jobs}


generate_jobs.last_stats = RunStats()
