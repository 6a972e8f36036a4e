"""Item image downloader (optional; nothing downloads unless asked).

:func:`download_images` fetches ``{item: url}`` into ``<image_dir>/<item>.jpg``:

- concurrent (a thread pool of ``workers``), each request with a ``timeout``;
- resumable: an item whose ``<item>.jpg`` exists is not fetched again, and files
  appear only complete (temporary file, then rename), so an interrupted run is
  simply run again;
- ``retries`` more attempts, with exponential back-off, for network errors, timeouts,
  HTTP 408/429 and 5xx; other HTTP errors fail at once;
- ``http``/``https`` URLs only; the response must declare an ``image/*`` content type
  and stay within ``max_bytes`` (the ``Content-Length`` and the bytes read are both
  checked);
- the bytes must decode as an image (Pillow); non-JPEG images are converted to JPEG.

A failure is logged, listed in ``<image_dir>/download_failures.tsv`` and skipped,
never raised. :func:`download_dataset_images` does this for a prepared dataset and
records the files in the ``.item`` file's ``image`` column, which
``mllmrec describe-images`` reads.
"""
import concurrent.futures
import http.client
import io
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import pandas as pd

log = logging.getLogger(__name__)

__all__ = ["DownloadReport", "download_images", "download_dataset_images", "FAILURES_FILE"]

FAILURES_FILE = "download_failures.tsv"
USER_AGENT = "mllmrec-image-downloader/0.1"


class _Retryable(Exception):
    pass


class _Permanent(Exception):
    pass


@dataclass
class DownloadReport:
    """What :func:`download_images` did: items ``downloaded``, already ``existing`` and
    ``failed`` (``{item: reason}``)."""

    downloaded: List[str] = field(default_factory=list)
    existing: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{len(self.downloaded)} downloaded, {len(self.existing)} already present, "
                f"{len(self.failed)} failed")


def _fetch(url: str, timeout: float, max_bytes: int) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            ctype = response.headers.get_content_type()
            if not ctype.startswith("image/"):
                raise _Permanent(f"content type {ctype!r} is not an image")
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _Permanent(f"{int(length)} bytes exceed the limit of {max_bytes}")
            data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise _Permanent(f"more than {max_bytes} bytes")
            return data
    except urllib.error.HTTPError as err:
        if err.code in (408, 429) or err.code >= 500:
            raise _Retryable(f"HTTP {err.code}") from None
        raise _Permanent(f"HTTP {err.code}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError,
            http.client.HTTPException) as err:
        raise _Retryable(f"{type(err).__name__}: {getattr(err, 'reason', err)}") from None


def _to_jpeg(data: bytes) -> bytes:
    """The image as JPEG bytes (unchanged when it is one); ``_Permanent`` when corrupt."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()  # catches truncated and corrupt files
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.load()
                return data
            out = io.BytesIO()
            img.convert("RGB").save(out, format="JPEG", quality=95)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _Permanent(f"not a readable image ({type(err).__name__}: {err})") from None


def _download_one(item: str, url: str, path: str, timeout: float, max_bytes: int, retries: int,
                  backoff: float) -> Optional[str]:
    """Downloads one image to ``path``; returns ``None`` or the reason of the failure."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return f"not an http(s) URL: {url!r}"
    reason = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            jpeg = _to_jpeg(_fetch(url, timeout, max_bytes))
        except _Retryable as err:
            reason = f"{err} (after {attempt + 1} attempt(s))"
            continue
        except _Permanent as err:
            return str(err)
        fd, tmp = tempfile.mkstemp(prefix=f".{item}.", suffix=".part", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(jpeg)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return None
    return reason


def _safe_name(item: str) -> str:
    if not item or item in (".", "..") or any(c in item for c in "/\\\0\t\n"):
        raise ValueError(f"item id {item!r} cannot be a file name")
    return item


def download_images(urls: Mapping[str, str], image_dir: str, workers: int = 8, retries: int = 2,
                    timeout: float = 10.0, max_bytes: int = 10 * 2 ** 20, backoff: float = 0.5,
                    show_progress: bool = False) -> DownloadReport:
    """Downloads ``{item: url}`` into ``<image_dir>/<item>.jpg``; never raises for one image.

    Args:
        urls: item id → image URL (empty URLs are ignored).
        image_dir: target directory (created).
        workers: concurrent downloads.
        retries: extra attempts for retryable failures (network, timeout, 408/429/5xx).
        timeout: seconds per connection attempt and per read.
        max_bytes: largest accepted image.
        backoff: seconds before the first retry, doubled for each further one.
        show_progress: a tqdm bar.
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
        path = os.path.join(image_dir, f"{_safe_name(item)}.jpg")
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            report.existing.append(item)
        else:
            todo[item] = (url, path)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_download_one, item, url, path, timeout, max_bytes, retries, backoff): item
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
    item_file = os.path.join(dataset_dir, f"{name}.item")
    if not os.path.isfile(item_file):
        raise FileNotFoundError(f"{item_file}: no such file")
    frame = pd.read_csv(item_file, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    names = {c.split(":")[0]: c for c in frame.columns}
    for needed in ("item_id", url_column):
        if needed not in names:
            raise ValueError(f"{item_file}: no {needed!r} column (has {list(names)})")
    image_dir = image_dir or os.path.join(dataset_dir, "images")
    urls = dict(zip(frame[names["item_id"]], frame[names[url_column]]))
    report = download_images(urls, image_dir, **kwargs)

    root = os.path.abspath(dataset_dir)
    base = os.path.abspath(image_dir)
    inside = os.path.commonpath([root, base]) == root
    paths = []
    for item in frame[names["item_id"]]:
        path = os.path.join(base, f"{item}.jpg")
        paths.append((os.path.relpath(path, root) if inside else path) if os.path.isfile(path) else "")
    frame[names.get("image", "image:token")] = paths
    fd, tmp = tempfile.mkstemp(prefix=".item-", dir=dataset_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write("\t".join(frame.columns) + "\n")
            for row in frame.itertuples(index=False, name=None):
                f.write("\t".join(row) + "\n")
        os.replace(tmp, item_file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return report
