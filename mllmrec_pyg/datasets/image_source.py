"""The one way item images are read, from the network or from disk.

``mllmrec download-images`` (and ``prepare amazon --images``) and ``mllmrec
describe-images`` both go through this module, so an image is held to the same
limits whatever command reads it:

- **URLs** (:func:`fetch_image`): ``http``/``https`` only, redirects included (a
  redirect to ``file:``, ``ftp:`` or any other scheme is refused); the response
  must declare an ``image/*`` content type; at most ``max_bytes`` bytes are read,
  whether or not the server sends a ``Content-Length`` (the body is read in chunks
  and the read stops at ``max_bytes + 1``); ``timeout`` is a **deadline** for the
  whole fetch of one image — connection, headers, body and retries — enforced by a
  watchdog that shuts the socket down when it passes, so a server that drips one
  byte at a time cannot hold a download longer than ``timeout`` seconds.
- **Local files** (:func:`read_local_image`): a relative path is resolved against
  a base directory; after resolving symlinks and ``..`` the file must lie inside
  one of the allowed roots (the dataset directory, and a directory the user named)
  unless ``allow_outside=True``; at most ``max_bytes`` bytes are read.
- **Every image**: the bytes must decode as an image (:func:`verify_image`, Pillow's
  ``Image.open(...).verify()``), so a text file or an HTML page is never passed on
  as an image.
- **File names from item ids** (:func:`item_file`): an id with a path separator,
  ``.``/``..``, a NUL, tab or newline cannot be a file name in the images directory.

A refusal raises :class:`ImageRefused` (a ``ValueError``: retrying cannot help); a
network failure that a retry could cure raises :class:`ImageUnavailable` (an
``OSError``); a passed deadline raises :class:`DeadlineExceeded` (an
``ImageUnavailable`` whose message says "deadline").
"""
import http.client
import io
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Iterable

__all__ = ["ImageRefused", "ImageUnavailable", "DeadlineExceeded", "FetchedImage", "DEFAULT_MAX_BYTES",
           "fetch_image", "read_local_image", "verify_image", "item_file", "image_extension"]

DEFAULT_MAX_BYTES = 10 * 2 ** 20
USER_AGENT = "mllmrec-image-fetch/0.1"
SCHEMES = ("http", "https")
_CHUNK = 64 * 2 ** 10


class ImageRefused(ValueError):
    """The image is not acceptable (type, size, not an image, outside the allowed
    directories, unsupported scheme, HTTP 4xx): a retry cannot help."""


class ImageUnavailable(OSError):
    """The image could not be fetched now (network error, HTTP 408/429/5xx): a retry may help."""


class DeadlineExceeded(ImageUnavailable, TimeoutError):
    """The whole fetch took longer than its deadline."""


@dataclass
class FetchedImage:
    """Bytes that decode as an image, their Pillow ``format`` (``"JPEG"``, ``"PNG"``…)
    and where they came from (``source``: the final URL or the resolved path)."""

    data: bytes
    format: str
    source: str


def verify_image(data: bytes, source: str) -> str:
    """The Pillow format of ``data``; :class:`ImageRefused` naming ``source`` when the
    bytes do not decode as an image (truncated, corrupt, or not an image at all)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            probe.verify()  # checks the structure without decoding every pixel
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageRefused(f"{source}: not a readable image ({type(err).__name__}: {err})") from None
    if not fmt:
        raise ImageRefused(f"{source}: not a readable image (unknown format)")
    return fmt


_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def image_extension(fmt: str) -> str:
    """The file extension of a Pillow format (so a file's name says what it holds)."""
    return _EXTENSIONS.get(fmt, "." + fmt.lower()[:4])


def item_file(directory: str, item: str, suffix: str) -> str:
    """``<directory>/<item><suffix>``; ``ValueError`` when ``item`` cannot be a plain file
    name there (empty, ``.``/``..``, a path separator, NUL, tab or newline), so an item id
    never writes or reads outside ``directory``."""
    item = str(item)
    if not item or item in (".", "..") or any(c in item for c in "/\\\0\t\n\r"):
        raise ValueError(f"item id {item!r} cannot be a file name (it would leave {directory})")
    return os.path.join(directory, f"{item}{suffix}")


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def read_local_image(value: str, base: str, roots: Iterable[str], allow_outside: bool = False,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> FetchedImage:
    """Reads and verifies a local image.

    Args:
        value: the path as written in the data (relative to ``base``, or absolute).
        base: directory of relative paths.
        roots: directories the file may lie in (after resolving symlinks and ``..``).
        allow_outside: accept a file anywhere (an explicit choice of the user).
        max_bytes: the largest accepted file.

    Raises :class:`ImageRefused` (outside the roots, too big, not an image) or
    ``FileNotFoundError``; ``source`` of the result is the resolved path.
    """
    path = os.path.realpath(os.path.join(base, value))  # join keeps an absolute value as is
    if not allow_outside:
        allowed = [os.path.realpath(r) for r in roots]
        if not any(_inside(path, r) for r in allowed):
            raise ImageRefused(f"{value}: resolves to {path}, outside {' and '.join(allowed)} "
                               "(images are read only inside the dataset directory or the named image "
                               "directory unless reading other paths is allowed explicitly)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ImageRefused(f"{path}: {size} bytes exceed the limit of {max_bytes}")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # the file may have grown since the stat
    if len(data) > max_bytes:
        raise ImageRefused(f"{path}: more than {max_bytes} bytes")
    return FetchedImage(data, verify_image(data, path), path)


class _Deadline:
    """A point in time after which every socket registered here is shut down, so a
    blocked connect or read returns at once whatever the server does."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self.seconds = seconds
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0 or self.expired:
            raise DeadlineExceeded(f"deadline of {self.seconds:g} s passed")
        return left

    def register(self, sock) -> None:
        with self._lock:
            if self.expired:
                _shutdown(sock)
            self._sockets.append(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock) -> None:
    try:
        # The plain socket's method, also for a TLS socket: it ends a read blocked in
        # another thread without tearing down the TLS object under that thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _connection(base, deadline: _Deadline):
    class Connection(base):
        def connect(self):
            self.timeout = deadline.remaining()  # no single wait longer than what is left
            super().connect()
            deadline.register(self.sock)
    return Connection


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_connection(http.client.HTTPConnection, self.deadline), req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_connection(http.client.HTTPSConnection, self.deadline), req, context=self._context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects to ``http``/``https`` only, without reading the redirect's body
    (the stock handler reads it whole, unbounded, and lets ``ftp:`` through)."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("location") or headers.get("uri")
        if not target:
            return None
        newurl = urllib.parse.urljoin(req.full_url, target.strip())
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in SCHEMES:
            fp.close()
            raise ImageRefused(f"{req.full_url}: redirect to {newurl!r} refused (only http and https)")
        new = self.redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        visited = new.redirect_dict = getattr(req, "redirect_dict", {})
        if visited.get(newurl, 0) >= self.max_repeats or len(visited) >= self.max_redirections:
            fp.close()
            raise ImageRefused(f"{req.full_url}: too many redirects")
        visited[newurl] = visited.get(newurl, 0) + 1
        fp.close()
        return self.parent.open(new, timeout=req.timeout)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _fetch_once(url: str, deadline: _Deadline, max_bytes: int) -> FetchedImage:
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _RedirectHandler(),
                    urllib.request.HTTPErrorProcessor(), _HTTPHandler(deadline), _HTTPSHandler(deadline)):
        opener.add_handler(handler)
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with opener.open(request, timeout=deadline.remaining()) as response:
            final = response.geturl()
            ctype = response.headers.get_content_type()
            if not ctype.startswith("image/"):
                raise ImageRefused(f"{final}: content type {ctype!r} is not an image")
            length = response.headers.get("Content-Length")
            if length and length.strip().isdigit() and int(length) > max_bytes:
                raise ImageRefused(f"{final}: {int(length)} bytes exceed the limit of {max_bytes}")
            chunks, size = [], 0
            while size <= max_bytes:
                chunk = response.read(min(_CHUNK, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                deadline.remaining()
            if size > max_bytes:
                raise ImageRefused(f"{final}: more than {max_bytes} bytes (the body was cut there)")
            data = b"".join(chunks)
    except ImageRefused:
        raise
    except DeadlineExceeded:
        raise DeadlineExceeded(f"{url}: deadline of {deadline.seconds:g} s passed") from None
    except urllib.error.HTTPError as err:
        err.close()  # its body is not read
        if err.code in (408, 429) or err.code >= 500:
            raise ImageUnavailable(f"{url}: HTTP {err.code}") from None
        raise ImageRefused(f"{url}: HTTP {err.code}") from None
    except ValueError as err:  # a URL urllib cannot parse: retrying cannot help
        raise ImageRefused(f"{url}: invalid URL ({err})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        if deadline.expired or time.monotonic() >= deadline.end:
            raise DeadlineExceeded(f"{url}: deadline of {deadline.seconds:g} s passed") from None
        reason = getattr(err, "reason", err)
        raise ImageUnavailable(f"{url}: {type(err).__name__}: {reason}") from None
    if deadline.expired:  # the socket was shut down after the last byte: a clean but late end
        raise DeadlineExceeded(f"{url}: deadline of {deadline.seconds:g} s passed")
    return FetchedImage(data, verify_image(data, final), final)


def fetch_image(url: str, timeout: float = 10.0, max_bytes: int = DEFAULT_MAX_BYTES, retries: int = 0,
                backoff: float = 0.5) -> FetchedImage:
    """Fetches and verifies one image URL (see the module docstring for the limits).

    Args:
        url: an ``http``/``https`` URL.
        timeout: seconds for the whole fetch, retries and back-off included (a deadline).
        max_bytes: the largest accepted body.
        retries: extra attempts after a failure a retry may cure (network errors,
            HTTP 408/429/5xx), while the deadline allows.
        backoff: seconds before the first retry, doubled for each further one.

    Raises :class:`ImageRefused`, :class:`ImageUnavailable` or :class:`DeadlineExceeded`.
    """
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError as err:
        raise ImageRefused(f"{url}: invalid URL ({err})") from None
    if scheme not in SCHEMES:
        raise ImageRefused(f"not an http(s) URL: {url!r}")
    deadline = _Deadline(timeout)
    attempts = 0
    try:
        while True:
            try:
                attempts += 1
                return _fetch_once(url, deadline, max_bytes)
            except DeadlineExceeded:
                raise
            except ImageUnavailable as err:
                pause = backoff * 2 ** (attempts - 1)
                if attempts > retries or time.monotonic() + pause >= deadline.end:
                    raise ImageUnavailable(f"{err} (after {attempts} attempt(s))") from None
                time.sleep(pause)
    finally:
        deadline.cancel()
