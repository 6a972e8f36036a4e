"""Item image downloader (optional; nothing downloads unless asked).

:func:`download_images` fetches ``{item: url}`` into ``<image_dir>/<item>.jpg``:

- concurrent (a thread pool of ``workers``);
- every fetch goes through :func:`mllmrec_pyg.datasets.image_source.fetch_image`,
  the path ``mllmrec describe-images`` uses too: ``http``/``https`` only (redirects
  included), an ``image/*`` content type, at most ``max_bytes`` bytes read with or
  without a ``Content-Length``, bytes that decode as an image (Pillow), and
  ``timeout`` a deadline for the whole download of one image, retries included;
- ``retries`` more attempts, with exponential back-off, for network errors and HTTP
  408/429/5xx, while the deadline allows; other failures are final at once;
- resumable: an item whose ``<item>.jpg`` exists is not fetched again, and files
  appear only complete (temporary file, then rename), so an interrupted run is
  simply run again;
- non-JPEG images are converted to JPEG;
- an item id that is not a plain file name (``../x``, ``a/b``…) is skipped with a
  warning naming the ``.item`` file and the id: nothing is written outside
  ``image_dir``.

A failure is logged, listed in ``<image_dir>/download_failures.tsv`` and skipped,
never raised. :func:`download_dataset_images` does this for a prepared dataset and
records the files in the ``.item`` file's ``image`` column, which
``mllmrec describe-images`` reads.
"""
import concurrent.futures
import io
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import pandas as pd

from mllmrec_pyg.datasets.image_source import (DEFAULT_MAX_BYTES, ImageRefused, ImageUnavailable, fetch_image,
                                               item_file)

log = logging.getLogger(__name__)

__all__ = ["DownloadReport", "download_images", "download_dataset_images", "FAILURES_FILE"]

FAILURES_FILE = "download_failures.tsv"


@dataclass
class DownloadReport:
    """What :func:`download_images` did: items ``downloaded``, already ``existing`` and
    ``failed`` (``{item: reason}``; an id that cannot be a file name is among them)."""

    downloaded: List[str] = field(default_factory=list)
    existing: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.downloaded)} downloaded, {len(self.existing)} already present, "
                f"{len(self.failed)} failed")


def _to_jpeg(data: bytes, fmt: str) -> bytes:
    """The (verified) image as JPEG bytes, unchanged when it is one."""
    from PIL import Image

    if fmt == "JPEG":
        return data
    try:
        with Image.open(io.BytesIO(data)) as img:
            out = io.BytesIO()
            img.convert("RGB").save(out, format="JPEG", quality=95)
            return out.getvalue()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageRefused(f"not a readable image ({type(err).__name__}: {err})") from None


def _download_one(url: str, path: str, timeout: float, max_bytes: int, retries: int,
                  backoff: float) -> Optional[str]:
    """Downloads one image to ``path``; returns ``None`` or the reason of the failure."""
    try:
        image = fetch_image(url, timeout=timeout, max_bytes=max_bytes, retries=retries, backoff=backoff)
        jpeg = _to_jpeg(image.data, image.format)
    except (ImageRefused, ImageUnavailable) as err:
        return str(err)
    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".jpg", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(jpeg)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return None


def download_images(urls: Mapping[str, str], image_dir: str, workers: int = 8, retries: int = 2,
                    timeout: float = 10.0, max_bytes: int = DEFAULT_MAX_BYTES, backoff: float = 0.5,
                    show_progress: bool = False, source: Optional[str] = None) -> DownloadReport:
    """Downloads ``{item: url}`` into ``<image_dir>/<item>.jpg``; never raises for one image.

    Args:
        urls: item id → image URL (empty URLs are ignored).
        image_dir: target directory (created).
        workers: concurrent downloads.
        retries: extra attempts for retryable failures (network, 408/429/5xx) within the deadline.
        timeout: seconds for the whole download of one image, retries included (a deadline).
        max_bytes: largest accepted image.
        backoff: seconds before the first retry, doubled for each further one.
        show_progress: a tqdm bar.
        source: where ``urls`` come from (the ``.item`` file), named in warnings.
    """
    if workers < 1 or retries < 0 or timeout <= 0 or max_bytes <= 0 or backoff < 0:
        raise ValueError("download_images: workers >= 1, retries >= 0, timeout > 0, max_bytes > 0, "
                         "backoff >= 0")
    os.makedirs(image_dir, exist_ok=True)
    report = DownloadReport()
    todo = {}
    for item, url in urls.items():
        item, url = str(item), (url or "").strip()
        if not url:
            continue
        try:
            path = item_file(image_dir, item, ".jpg")
        except ValueError as err:  # one bad id must not stop the other downloads
            report.failed[item] = str(err)
            log.warning("%s: %s; skipped", source or image_dir, err)
            continue
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            report.existing.append(item)
        else:
            todo[item] = (url, path)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_download_one, url, path, timeout, max_bytes, retries, backoff): item
                   for item, (url, path) in todo.items()}
        done = concurrent.futures.as_completed(futures)
        if show_progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(futures), desc="images")
        for future in done:
            item = futures[future]
            try:
                reason = future.result()
            except Exception as err:  # one image must never stop the others
                reason = f"{type(err).__name__}: {err}"
            if reason is None:
                report.downloaded.append(item)
            else:
                report.failed[item] = reason
                log.warning("image of item %s (%s) skipped: %s", item, todo[item][0], reason)
    _write_failures(image_dir, report.failed, urls)
    return report


def _write_failures(image_dir: str, failed: Mapping[str, str], urls: Mapping[str, str]) -> None:
    path = os.path.join(image_dir, FAILURES_FILE)
    if not failed:
        if os.path.exists(path):
            os.unlink(path)
        return
    fd, tmp = tempfile.mkstemp(prefix=".failures-", dir=image_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("item_id\turl\treason\n")
        for item in sorted(failed):
            row = [item, str(urls.get(item, "")), failed[item]]
            f.write("\t".join(" ".join(v.split()) for v in row) + "\n")
    os.replace(tmp, path)


def download_dataset_images(dataset_dir: str, name: Optional[str] = None, image_dir: Optional[str] = None,
                            url_column: str = "image_url", **kwargs) -> DownloadReport:
    """Downloads the images named in ``<dataset_dir>/<name>.item`` (column ``url_column``)
    and rewrites that file (atomically) with an ``image:token`` column: the image path,
    relative to ``dataset_dir`` when inside it, for items that have a file, else empty.

    Args:
        dataset_dir: a prepared dataset directory.
        name: dataset name (default: the directory's base name).
        image_dir: where the images go (default ``<dataset_dir>/images``).
        url_column: the ``.item`` column holding URLs.
        kwargs: passed to :func:`download_images`.
    """
    name = name or os.path.basename(os.path.normpath(dataset_dir))
    items_path = os.path.join(dataset_dir, f"{name}.item")
    if not os.path.isfile(items_path):
        raise FileNotFoundError(f"{items_path}: no such file")
    frame = pd.read_csv(items_path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    names = {c.split(":")[0]: c for c in frame.columns}
    for needed in ("item_id", url_column):
        if needed not in names:
            raise ValueError(f"{items_path}: no {needed!r} column (has {list(names)})")
    image_dir = image_dir or os.path.join(dataset_dir, "images")
    urls = dict(zip(frame[names["item_id"]], frame[names[url_column]]))
    report = download_images(urls, image_dir, source=items_path, **kwargs)

    root = os.path.abspath(dataset_dir)
    base = os.path.abspath(image_dir)
    inside = os.path.commonpath([root, base]) == root
    paths = []
    for item in frame[names["item_id"]]:
        try:
            path = item_file(base, item, ".jpg")
        except ValueError:
            paths.append("")  # reported by download_images
            continue
        paths.append((os.path.relpath(path, root) if inside else path) if os.path.isfile(path) else "")
    frame[names.get("image", "image:token")] = paths
    fd, tmp = tempfile.mkstemp(prefix=".item-", dir=dataset_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write("\t".join(frame.columns) + "\n")
            for row in frame.itertuples(index=False, name=None):
                f.write("\t".join(row) + "\n")
        os.replace(tmp, items_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return report
