"""One fetch/open path for item images (mllmrec_pyg/datasets/image_source.py), exercised
against a real HTTP server on loopback through ``download-images`` and
``describe-images``: size cap without Content-Length, content type, Pillow check,
a deadline for the whole download, redirects, and paths that leave the dataset."""
import contextlib
import io
import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from PIL import Image

from mllmrec_pyg.cli import main as cli_main
from mllmrec_pyg.datasets.image_source import (DeadlineExceeded, ImageRefused, fetch_image, item_file,
                                               read_local_image)
from mllmrec_pyg.reasoning.describe import image_jobs
from mllmrec_pyg.reasoning.templates import TEMPLATES


def _jpeg(color=(200, 30, 30)):
    out = io.BytesIO()
    Image.new("RGB", (12, 8), color).save(out, format="JPEG")
    return out.getvalue()


JPEG = _jpeg()
BIG = 30 * 2 ** 20
DRIP_BYTES = 120  # one byte every 0.5 s: a minute in all


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: a body without Content-Length ends when the connection closes.
    sent = {}

    def log_message(self, *args):
        pass

    def _count(self, n):
        self.sent[self.path] = self.sent.get(self.path, 0) + n

    def _head(self, code=200, ctype="image/jpeg", length=None, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()

    def do_GET(self):
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: that is the point of several tests

    def _route(self):
        path = self.path
        if path == "/ok.jpg":
            self._head(length=len(JPEG))
            self.wfile.write(JPEG)
        elif path == "/big-nolength.jpg":  # 30 MiB, no Content-Length
            self._head()
            block = b"\0" * 2 ** 16
            for _ in range(BIG // len(block)):
                self.wfile.write(block)
                self._count(len(block))
        elif path == "/page.html":
            body = b"<html>secret page, no image</html>"
            self._head(ctype="text/html", length=len(body))
            self.wfile.write(body)
        elif path == "/text-as-image.jpg":
            body = b"just some text"
            self._head(length=len(body))
            self.wfile.write(body)
        elif path == "/drip.jpg":
            self._head(length=DRIP_BYTES)
            for _ in range(DRIP_BYTES):
                self.wfile.write(b"\xff")
                self.wfile.flush()
                self._count(1)
                time.sleep(0.5)
        elif path == "/drip-headers.jpg":  # even the status line arrives one byte at a time
            for byte in b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nX-Padding: " + b"p" * DRIP_BYTES:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                self._count(1)
                time.sleep(0.5)
        elif path == "/to-file.jpg":
            self._head(302, "text/plain", 0, [("Location", "file:///etc/passwd")])
        elif path == "/to-ftp.jpg":
            self._head(302, "text/plain", 0, [("Location", "ftp://127.0.0.1/x.jpg")])
        elif path == "/to-ok.jpg":
            self._head(302, "text/plain", 0, [("Location", "/ok.jpg")])
        else:
            self._head(404, "text/plain", 0)


@pytest.fixture()
def images():
    _Handler.sent = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.sent
    httpd.shutdown()
    httpd.server_close()


def test_body_without_length_is_cut_at_the_cap(images):
    base, sent = images
    with pytest.raises(ImageRefused, match="more than 1048576 bytes"):
        fetch_image(f"{base}/big-nolength.jpg", timeout=30, max_bytes=2 ** 20)
    # The client stopped reading at the cap: the server could not push the 30 MiB.
    time.sleep(0.2)
    assert sent["/big-nolength.jpg"] < BIG // 2


def test_type_image_check_and_redirects(images):
    base, _ = images
    with pytest.raises(ImageRefused, match="content type 'text/html'"):
        fetch_image(f"{base}/page.html")
    with pytest.raises(ImageRefused, match="not a readable image"):
        fetch_image(f"{base}/text-as-image.jpg")
    with pytest.raises(ImageRefused, match=r"redirect to 'file:///etc/passwd' refused"):
        fetch_image(f"{base}/to-file.jpg")
    with pytest.raises(ImageRefused, match=r"redirect to 'ftp://.*' refused"):
        fetch_image(f"{base}/to-ftp.jpg")
    with pytest.raises(ImageRefused, match="not an http"):
        fetch_image("file:///etc/passwd")
    ok = fetch_image(f"{base}/to-ok.jpg")  # an http redirect is followed
    assert ok.data == JPEG and ok.format == "JPEG" and ok.source.endswith("/ok.jpg")


@pytest.mark.parametrize("path", ["/drip.jpg", "/drip-headers.jpg"])
def test_timeout_is_a_deadline_for_the_whole_download(images, path):
    base, sent = images
    with pytest.raises(DeadlineExceeded, match="deadline of 2 s"):
        fetch_image(base + path, timeout=2, retries=2, backoff=0.1)
    # Each read got a byte well within 2 s, yet the download ended long before the
    # server had dripped its minute's worth.
    assert sent[path] < DRIP_BYTES // 2


def _item_file(d, name, rows, column="image_url"):
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{name}.item", "w") as f:
        f.write(f"item_id:token\ttitle:token_seq\t{column}:token\n")
        for item, value in rows:
            f.write(f"{item}\tTitle {item}\t{value}\n")


def test_download_images_deadline_and_escaping_ids(images, tmp_path, caplog, capsys):
    base, sent = images
    d = tmp_path / "shop"
    _item_file(d, "shop", [("0", f"{base}/ok.jpg"), ("../evil", f"{base}/ok.jpg"), ("a/b", f"{base}/ok.jpg"),
                           ("1", f"{base}/drip.jpg"), ("2", f"{base}/big-nolength.jpg"),
                           ("3", f"{base}/to-file.jpg")])
    with caplog.at_level(logging.WARNING):
        assert cli_main(["download-images", str(d), "--timeout", "2", "--retries", "2", "--max-mb", "1"]) == 0
    assert "1 downloaded, 0 already present, 5 failed" in capsys.readouterr().out
    assert sent["/drip.jpg"] < DRIP_BYTES // 2
    # The escaping ids are skipped with a message naming the file and the id; nothing leaves images/.
    for bad in ("../evil", "a/b"):
        assert any(str(d / "shop.item") in r.getMessage() and repr(bad) in r.getMessage() for r in caplog.records)
    assert sorted(os.listdir(d)) == ["images", "shop.item"]
    assert not (tmp_path / "evil.jpg").exists() and not (d / "a").exists()
    assert sorted(os.listdir(d / "images")) == ["0.jpg", "download_failures.tsv"]
    failures = pd.read_csv(d / "images" / "download_failures.tsv", sep="\t", dtype=str).set_index("item_id")
    assert "deadline" in failures.loc["1", "reason"]
    assert "more than 1048576 bytes" in failures.loc["2", "reason"]
    assert "redirect to 'file:///etc/passwd' refused" in failures.loc["3", "reason"]
    assert "cannot be a file name" in failures.loc["../evil", "reason"]
    item = pd.read_csv(d / "shop.item", sep="\t", dtype=str, keep_default_na=False)
    assert item["image:token"].tolist() == ["images/0.jpg", "", "", "", "", ""]


def test_item_file_refuses_escaping_names(tmp_path):
    assert item_file(str(tmp_path), "B00X", ".jpg") == str(tmp_path / "B00X.jpg")
    for bad in ("", ".", "..", "../x", "a/b", "a\\b", "x\0", "x\ny"):
        with pytest.raises(ValueError, match="cannot be a file name"):
            item_file(str(tmp_path), bad, ".jpg")


@pytest.fixture()
def layout(tmp_path):
    """A dataset with a good image, a separate image directory, and a secret outside both."""
    secret = tmp_path / "secret.txt"
    secret.write_text("password=hunter2\n")
    outside_img = tmp_path / "elsewhere.jpg"
    outside_img.write_bytes(JPEG)
    d = tmp_path / "data" / "shop"
    (d / "img").mkdir(parents=True)
    (d / "img" / "a.jpg").write_bytes(JPEG)
    (d / "img" / "fake.jpg").write_text("not an image at all")
    (d / "img" / "huge.jpg").write_bytes(JPEG + b"\0" * 2 ** 20)
    os.symlink(secret, d / "img" / "link.jpg")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "e.jpg").write_bytes(JPEG)
    return tmp_path, d, secret, outside_img, extra


def test_local_paths_stay_inside_the_dataset(layout):
    root, d, secret, outside_img, extra = layout
    ok = read_local_image("img/a.jpg", str(d), [str(d)])
    assert ok.data == JPEG and ok.source == os.path.realpath(d / "img" / "a.jpg")
    cases = {"../../secret.txt": "outside", str(secret): "outside", "img/link.jpg": "outside",
             str(outside_img): "outside", "img/../../../secret.txt": "outside",
             "img/fake.jpg": "not a readable image", "img/huge.jpg": "exceed the limit"}
    for value, reason in cases.items():
        with pytest.raises(ImageRefused, match=reason):
            read_local_image(value, str(d), [str(d)], max_bytes=2 ** 20)
    with pytest.raises(FileNotFoundError):
        read_local_image("img/none.jpg", str(d), [str(d)])
    # Allowed explicitly: an image anywhere is read, a text file still is not an image.
    assert read_local_image(str(outside_img), str(d), [str(d)], allow_outside=True).data == JPEG
    with pytest.raises(ImageRefused, match="not a readable image"):
        read_local_image(str(secret), str(d), [str(d)], allow_outside=True)
    with pytest.raises(ImageRefused, match="not a readable image"):
        read_local_image("img/link.jpg", str(d), [str(d)], allow_outside=True)
    # A named image directory is a root too.
    assert read_local_image("e.jpg", str(extra), [str(d), str(extra)]).data == JPEG


def test_image_jobs_skip_what_the_checks_refuse(layout, images):
    root, d, secret, outside_img, extra = layout
    base, _ = images
    rows = [("1", "img/a.jpg"), ("2", "../../secret.txt"), ("3", str(secret)), ("4", "img/link.jpg"),
            ("5", "img/fake.jpg"), ("6", f"{base}/page.html"), ("7", f"{base}/big-nolength.jpg"),
            ("8", f"{base}/ok.jpg"), ("9", "file:///etc/passwd"), ("10", f"{base}/to-file.jpg"),
            ("11", "http://[bad/x.jpg")]
    _item_file(d, "shop", rows, column="image")
    jobs, problems = image_jobs(str(d), TEMPLATES["image"], allow_urls=True, max_bytes=2 ** 20, url_timeout=10)
    assert [j.id for j in jobs] == ["1", "8"]
    reasons = {p.item_id: p.reason for p in problems}
    assert "outside" in reasons["2"] and "outside" in reasons["3"] and "outside" in reasons["4"]
    assert "not a readable image" in reasons["5"]
    assert "content type 'text/html'" in reasons["6"]
    assert "more than 1048576 bytes" in reasons["7"]
    assert "only http(s)" in reasons["9"] and "redirect" in reasons["10"] and "invalid URL" in reasons["11"]
    cached = jobs[1].image
    assert os.path.dirname(cached) == str(d / ".image_cache") and cached.endswith(".jpg")
    with pytest.raises(ValueError, match=r"shop\.item: item 2: .*outside"):
        image_jobs(str(d), TEMPLATES["image"], allow_urls=True, strict=True)


def test_describe_images_sends_only_checked_images(layout, images):
    """The issue's reproduction: a URL to a 30 MiB body without length, an HTML page, an
    absolute path and ../../secret.txt. Only the real images reach the model server."""
    from test_reasoning_http import running_server, stats

    root, d, secret, outside_img, extra = layout
    base, _ = images
    _item_file(d, "shop", [("1", "img/a.jpg"), ("2", "../../secret.txt"), ("3", str(secret)),
                           ("4", f"{base}/big-nolength.jpg"), ("5", f"{base}/page.html"), ("6", f"{base}/ok.jpg")],
               column="image")
    with running_server() as server:
        argv = ["describe-images", str(d), "--backend", "openai", "--model", "loopback", "--base-url", server,
                "--max-new-tokens", "5", "--no-progress", "--allow-urls", "--max-image-mb", "1"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert cli_main(argv) == 0
        report = json.loads(out.getvalue())
        assert report["described"] == 2 and stats(server)["served"] == 1  # two items, one identical image
        skipped = " ".join(report["skipped"])
        for item in ("2", "3", "4", "5"):
            assert f"item {item}:" in skipped
        texts = [json.loads(x) for x in open(d / "shop.images.jsonl")]
        assert sorted(t["item_id"] for t in texts) == ["1", "6"]


def test_describe_images_strict_refusal_is_one_line_and_writes_nothing(layout):
    """Through the real command line: exit 2, one line naming the .item file and the
    item, no traceback, nothing written (the model server is never contacted)."""
    import subprocess
    import sys

    root, d, secret, outside_img, extra = layout
    _item_file(d, "shop", [("1", "img/a.jpg"), ("2", "../../secret.txt")], column="image")
    before = sorted(os.listdir(d))
    cmd = [sys.executable, "-m", "mllmrec_pyg", "describe-images", str(d), "--backend", "openai", "--model", "m",
           "--base-url", "http://127.0.0.1:9/v1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for extra_args, message in ((["--strict"], "shop.item: item 2:"), (["--max-image-mb", "0"], "--max-image-mb")):
        done = subprocess.run(cmd + extra_args, env=env, capture_output=True, text=True, timeout=120)
        lines = [x for x in done.stderr.splitlines() if x.strip()]
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(lines) == 1 and lines[0].startswith("mllmrec describe-images: error:") and message in lines[0]
        assert sorted(os.listdir(d)) == before
