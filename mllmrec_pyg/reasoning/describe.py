"""Image → text for items that have an image (NOTES §1 step 1), and the fused item
multimodal descriptions (step 2).

Images are named by a column of the ``.item`` file (``image_column``; by default
the first of :data:`IMAGE_COLUMNS` present). A value is a local path (relative
paths are resolved against ``image_dir``, default the dataset directory) or, only
when ``allow_urls=True``, an ``http(s)`` URL downloaded once into
``<dataset_dir>/.image_cache``. A URL without ``allow_urls``, a missing or
unreadable file is reported with the item and the path and that item is skipped
(its description then has no image part); ``strict=True`` raises instead.

The image prompt's ``{category}`` is the item's ``category_column`` value (its
last token for a category path) or the fixed ``category`` string.
"""
import hashlib
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional

from mllmrec_pyg.reasoning.runner import Job, generate_jobs
from mllmrec_pyg.reasoning.store import GenerationStore
from mllmrec_pyg.reasoning.templates import PromptTemplate
from mllmrec_pyg.text.io import write_texts
from mllmrec_pyg.text.item_text import item_texts, read_atomic

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "image_path", "imUrl", "image_url")


@dataclass
class ImageProblem:
    """An item whose image could not be used."""

    item_id: str
    value: str
    reason: str

    def __str__(self):
        return f"item {self.item_id}: {self.reason} ({self.value})"


def _fetch(url: str, cache_dir: str, timeout: float) -> str:
    """Downloads ``url`` once into ``cache_dir`` (atomic); returns the local path."""
    os.makedirs(cache_dir, exist_ok=True)
    ext = os.path.splitext(url.split("?")[0])[1][:5] or ".img"
    path = os.path.join(cache_dir, hashlib.sha256(url.encode()).hexdigest()[:32] + ext)
    if not os.path.isfile(path):
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
        fd, tmp = tempfile.mkstemp(prefix=".img-", dir=cache_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


def image_jobs(dataset_dir: str, template: PromptTemplate, name: Optional[str] = None,
               image_column: Optional[str] = None, image_dir: Optional[str] = None, allow_urls: bool = False,
               category: str = "the product", category_column: Optional[str] = None, strict: bool = False,
               url_timeout: float = 30.0):
    """``(jobs, problems)``: one :class:`~mllmrec_pyg.reasoning.runner.Job` per item with a usable image.

    Args:
        dataset_dir, name: the dataset (``<name>.item``).
        template: the image template (its ``{category}`` field is filled per item).
        image_column: the column naming each item's image (default: the first of
            :data:`IMAGE_COLUMNS` present).
        image_dir: base directory of relative image paths (default ``dataset_dir``).
        allow_urls: download ``http(s)`` images (off by default: nothing leaves the machine).
        category: the ``{category}`` text when ``category_column`` is not given.
        category_column: a column whose value (last token, for ``a|b|c`` or list paths) is the category.
        strict: raise on the first unusable image instead of skipping it.
        url_timeout: seconds per download.
    """
    name = name or os.path.basename(os.path.normpath(dataset_dir))
    item_file = os.path.join(dataset_dir, f"{name}.item")
    frame = read_atomic(item_file)
    if image_column is None:
        image_column = next((c for c in IMAGE_COLUMNS if c in frame.columns), None)
        if image_column is None:
            raise ValueError(f"{item_file}: no image column (looked for {list(IMAGE_COLUMNS)}; "
                             f"columns: {list(frame.columns)}); name one with image_column")
    for col in (image_column, category_column):
        if col is not None and col not in frame.columns:
            raise ValueError(f"{item_file}: no column {col!r} (columns: {list(frame.columns)})")
    base = image_dir or dataset_dir
    jobs: List[Job] = []
    problems: List[ImageProblem] = []
    for row in frame.to_dict("records"):
        item, value = row["item_id"], str(row[image_column]).strip()
        if not value:
            continue  # an item without an image simply has no image description
        try:
            if value.startswith(("http://", "https://")):
                if not allow_urls:
                    raise PermissionError("is a URL and reading URLs is off (enable allow_urls)")
                path = _fetch(value, os.path.join(dataset_dir, ".image_cache"), url_timeout)
            else:
                path = value if os.path.isabs(value) else os.path.join(base, value)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"image file {path} does not exist")
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        except (OSError, ValueError) as err:
            problem = ImageProblem(item, value, str(err))
            if strict:
                raise type(err)(f"{item_file}: {problem}") if not isinstance(err, PermissionError) \
                    else ValueError(f"{item_file}: {problem}") from None
            problems.append(problem)
            continue
        cat = category
        if category_column:
            raw = str(row[category_column]).replace("|", ",").strip(" []'\"")
            cat = raw.split(",")[-1].strip(" '\"") or category
        jobs.append(Job(item, template.render(category=cat), image=path, image_hash=digest))
    for p in problems:
        log.warning("%s: %s; skipped (no image description)", item_file, p)
    return jobs, problems


def describe_images(dataset_dir: str, backend, template: PromptTemplate, store_path: str, output: str,
                    progress: bool = True, regenerate: bool = False, **job_options) -> dict:
    """Describes every usable item image through the store and writes ``output``
    (JSONL ``item_id``/``text``, atomically). ``regenerate`` describes stored images again;
    ``job_options`` go to :func:`image_jobs`.
    Returns the run statistics and the skipped images."""
    jobs, problems = image_jobs(dataset_dir, template, **job_options)
    store = GenerationStore(store_path)
    records = generate_jobs(jobs, backend, template, store, desc="describe-images", progress=progress,
                            regenerate=regenerate)
    write_texts(output, "item_id", {j.id: records[j.id]["text"] for j in jobs})
    stats = generate_jobs.last_stats.as_dict()
    stats.update(described=len(jobs), skipped=[str(p) for p in problems], written=output)
    return stats


def fused_item_texts(dataset_dir: str, output: str, name: Optional[str] = None, item_template: Optional[str] = None,
                     image_descriptions: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Writes the item multimodal descriptions (title, brand, categories, description and
    image description, fused by :func:`mllmrec_pyg.text.item_text.item_texts` with
    ``item_template``) to ``output``; returns them."""
    name = name or os.path.basename(os.path.normpath(dataset_dir))
    texts = item_texts(os.path.join(dataset_dir, f"{name}.item"), template=item_template,
                       image_descriptions=image_descriptions)
    write_texts(output, "item_id", texts)
    return texts
