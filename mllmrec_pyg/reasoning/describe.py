"""Image → text for items that have an image (NOTES §1 step 1), and the fused item
multimodal descriptions (step 2).

Images are named by a column of the ``.item`` file (``image_column``; by default
the first of :data:`IMAGE_COLUMNS` present). Every image is read through
:mod:`mllmrec_pyg.datasets.image_source`, the path ``mllmrec download-images`` uses
too:

- a local path (relative paths resolve against ``image_dir``, default the dataset
  directory) must lie, after resolving symlinks and ``..``, inside the dataset
  directory or ``image_dir``, unless ``allow_outside=True``;
- an ``http(s)`` URL is fetched only when ``allow_urls=True``: ``http(s)`` redirects
  only, an ``image/*`` content type, at most ``max_bytes`` bytes, ``url_timeout``
  seconds for the whole fetch; it is kept once in ``<dataset_dir>/.image_cache``
  under the name of its content hash with the extension of its real format;
- every image is at most ``max_bytes`` bytes and must decode as an image (Pillow).

An image that fails any of these is reported with the item and the value and that
item is skipped (its description then has no image part); ``strict=True`` raises
a ``ValueError`` naming the ``.item`` file instead. Nothing that fails these checks
is sent to a model.

The image prompt's ``{category}`` is the item's ``category_column`` value (its
last token for a category path) or the fixed ``category`` string.
"""
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional

from mllmrec_pyg.datasets.image_source import (DEFAULT_MAX_BYTES, ImageRefused, fetch_image,
                                               image_extension, read_local_image)
from mllmrec_pyg.reasoning.runner import Job, generate_jobs
from mllmrec_pyg.reasoning.store import GenerationStore
from mllmrec_pyg.reasoning.templates import PromptTemplate
from mllmrec_pyg.text.io import write_texts
from mllmrec_pyg.text.item_text import item_texts, read_atomic

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image", "image_path", "imUrl", "image_url")
CACHE_DIR = ".image_cache"


@dataclass
class ImageProblem:
    """An item whose image could not be used."""

    item_id: str
    value: str
    reason: str

    def __str__(self):
        return f"item {self.item_id}: {self.reason} ({self.value})"


def _cached_url(url: str, cache_dir: str, timeout: float, max_bytes: int) -> str:
    """Fetches ``url`` (checked, see :func:`~mllmrec_pyg.datasets.image_source.fetch_image`)
    once into ``cache_dir`` (atomic); returns the local path. The index file
    ``<sha of url>.url`` names the content file, so a URL is fetched once."""
    os.makedirs(cache_dir, exist_ok=True)
    index = os.path.join(cache_dir, hashlib.sha256(url.encode("utf-8")).hexdigest()[:32] + ".url")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            name = os.path.basename(f.read().strip())
        if name and os.path.isfile(os.path.join(cache_dir, name)):
            return os.path.join(cache_dir, name)
    image = fetch_image(url, timeout=timeout, max_bytes=max_bytes)
    path = os.path.join(cache_dir, hashlib.sha256(image.data).hexdigest()[:32] + image_extension(image.format))
    for target, data in ((path, image.data), (index, os.path.basename(path).encode("utf-8"))):
        fd, tmp = tempfile.mkstemp(prefix=".img-", dir=cache_dir)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    return path


def image_jobs(dataset_dir: str, template: PromptTemplate, name: Optional[str] = None,
               image_column: Optional[str] = None, image_dir: Optional[str] = None, allow_urls: bool = False,
               category: str = "the product", category_column: Optional[str] = None, strict: bool = False,
               url_timeout: float = 30.0, allow_outside: bool = False, max_bytes: int = DEFAULT_MAX_BYTES):
    """``(jobs, problems)``: one :class:`~mllmrec_pyg.reasoning.runner.Job` per item with a usable image.

    Args:
        dataset_dir, name: the dataset (``<name>.item``).
        template: the image template (its ``{category}`` field is filled per item).
        image_column: the column naming each item's image (default: the first of
            :data:`IMAGE_COLUMNS` present).
        image_dir: base directory of relative image paths (default ``dataset_dir``); images
            may lie in it or in ``dataset_dir``.
        allow_urls: download ``http(s)`` images (off by default: nothing leaves the machine).
        category: the ``{category}`` text when ``category_column`` is not given.
        category_column: a column whose value (last token, for ``a|b|c`` or list paths) is the category.
        strict: raise on the first unusable image instead of skipping it.
        url_timeout: seconds for the whole download of one URL (a deadline).
        allow_outside: read local images anywhere, not only in ``dataset_dir``/``image_dir``.
        max_bytes: the largest accepted image.
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
    roots = [dataset_dir] + ([image_dir] if image_dir else [])
    cache_dir = os.path.join(dataset_dir, CACHE_DIR)
    jobs: List[Job] = []
    problems: List[ImageProblem] = []
    for row in frame.to_dict("records"):
        item, value = row["item_id"], str(row[image_column]).strip()
        if not value:
            continue  # an item without an image simply has no image description
        try:
            if "://" in value:
                if not value.lower().startswith(("http://", "https://")):
                    raise ImageRefused(f"only http(s) URLs are read, not {value.split('://')[0]!r}")
                if not allow_urls:
                    raise ImageRefused("is a URL and reading URLs is off (enable allow_urls)")
                value_path, value_base = _cached_url(value, cache_dir, url_timeout, max_bytes), dataset_dir
            else:
                value_path, value_base = value, base
            # A cached download is checked like any file: a cache edited by hand is no way around it.
            image = read_local_image(value_path, value_base, roots, allow_outside, max_bytes)
        except (ValueError, OSError) as err:  # ImageRefused is a ValueError, ImageUnavailable an OSError
            problem = ImageProblem(item, value, str(err))
            if strict:
                raise ValueError(f"{item_file}: {problem}") from None
            problems.append(problem)
            continue
        cat = category
        if category_column:
            raw = str(row[category_column]).replace("|", ",").strip(" []'\"")
            cat = raw.split(",")[-1].strip(" '\"") or category
        jobs.append(Job(item, template.render(category=cat), image=image.source,
                        image_hash=hashlib.sha256(image.data).hexdigest()))
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
