"""The image downloader against a real HTTP server of our own on loopback."""
import io
import os
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from PIL import Image

from mllmrec_pyg.cli import main as cli_main
from mllmrec_pyg.datasets.images import FAILURES_FILE, download_dataset_images, download_images


def _image(fmt, size=(12, 8), color=(200, 30, 30)):
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


JPEG = _image("JPEG")
PNG = _image("PNG", color=(10, 200, 10))


class _Handler(BaseHTTPRequestHandler):
    hits = Counter()
    lock = threading.Lock()

    def log_message(self, *args):  # keep the test output clean
        pass

    def _send(self, code, body=b"", ctype="image/jpeg", length=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with self.lock:
            self.hits[self.path] += 1
            hit = self.hits[self.path]
        if self.path == "/ok.jpg":
            self._send(200, JPEG)
        elif self.path == "/ok.png":
            self._send(200, PNG, "image/png")
        elif self.path == "/page.html":
            self._send(200, b"<html>no image</html>", "text/html")
        elif self.path == "/big.jpg":
            self._send(200, JPEG + b"\0" * 5000)
        elif self.path == "/corrupt.jpg":
            self._send(200, JPEG[:40])
        elif self.path == "/flaky.jpg":  # fails twice, then works
            self._send(503, b"busy", "text/plain") if hit <= 2 else self._send(200, JPEG)
        elif self.path == "/down.jpg":
            self._send(500, b"err", "text/plain")
        elif self.path == "/slow.jpg":
            time.sleep(3)
            self._send(200, JPEG)
        else:
            self._send(404, b"not found", "text/plain")


@pytest.fixture()
def server():
    _Handler.hits = Counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.hits
    httpd.shutdown()
    httpd.server_close()


def test_download_checks_retries_and_resumes(tmp_path, server):
    base, hits = server
    urls = {"0": f"{base}/ok.jpg", "1": f"{base}/ok.png", "2": f"{base}/page.html", "3": f"{base}/big.jpg",
            "4": f"{base}/corrupt.jpg", "5": f"{base}/flaky.jpg", "6": f"{base}/missing.jpg",
            "7": f"{base}/down.jpg", "8": f"{base}/slow.jpg", "9": "file:///etc/passwd", "10": ""}
    out = tmp_path / "images"
    report = download_images(urls, str(out), workers=4, retries=2, timeout=1.0, max_bytes=len(JPEG) + 100,
                             backoff=0.01)
    assert sorted(report.downloaded, key=int) == ["0", "1", "5"]
    assert set(report.failed) == {"2", "3", "4", "6", "7", "8", "9"}
    assert "content type 'text/html'" in report.failed["2"]
    assert "exceed the limit" in report.failed["3"]
    assert "not a readable image" in report.failed["4"]
    assert "HTTP 404" in report.failed["6"] and hits["/missing.jpg"] == 1  # no retry on 404
    assert "HTTP 500" in report.failed["7"] and hits["/down.jpg"] == 3    # 1 + 2 retries
    assert hits["/flaky.jpg"] == 3
    assert "not an http(s) URL" in report.failed["9"]
    with Image.open(out / "1.jpg") as img:  # the PNG was converted
        assert img.format == "JPEG" and img.size == (12, 8)
    assert (out / "0.jpg").read_bytes() == JPEG
    assert sorted(os.listdir(out)) == ["0.jpg", "1.jpg", "5.jpg", FAILURES_FILE]  # no partial files
    failures = pd.read_csv(out / FAILURES_FILE, sep="\t", dtype=str)
    assert sorted(failures.item_id, key=int) == ["2", "3", "4", "6", "7", "8", "9"]

    # Second run: the present images are not fetched again; failures are retried.
    before = sum(hits[p] for p in ("/ok.jpg", "/ok.png", "/flaky.jpg"))
    again = download_images(urls, str(out), workers=2, retries=0, timeout=1.0, max_bytes=len(JPEG) + 100)
    assert sorted(again.existing, key=int) == ["0", "1", "5"] and not again.downloaded
    assert sum(hits[p] for p in ("/ok.jpg", "/ok.png", "/flaky.jpg")) == before
    assert hits["/missing.jpg"] == 2


def test_dataset_images_fill_the_item_file(tmp_path, server, capsys):
    base, _ = server
    d = tmp_path / "toy"
    d.mkdir()
    (d / "toy.item").write_text("item_id:token\ttitle:token_seq\timage_url:token\n"
                                f"0\tRed box\t{base}/ok.jpg\n1\tNo image\t\n2\tGone\t{base}/missing.jpg\n")
    report = download_dataset_images(str(d), retries=0, timeout=2)
    assert report.downloaded == ["0"] and set(report.failed) == {"2"}
    item = pd.read_csv(d / "toy.item", sep="\t", dtype=str, keep_default_na=False)
    assert list(item.columns) == ["item_id:token", "title:token_seq", "image_url:token", "image:token"]
    assert item["image:token"].tolist() == ["images/0.jpg", "", ""]
    assert (d / "images" / "0.jpg").read_bytes() == JPEG

    # The command line, resuming into the same directory.
    assert cli_main(["download-images", str(d), "--retries", "0", "--timeout", "2"]) == 0
    printed = capsys.readouterr().out
    assert "0 downloaded, 1 already present, 1 failed" in printed
    assert cli_main(["download-images", str(tmp_path / "nope")]) == 2


def test_prepare_with_images(tmp_path, server):
    from test_datasets_amazon import write_amazon_fixture

    base, _ = server
    rpath, mpath, _ = write_amazon_fixture(tmp_path / "raw")
    text = mpath.read_text() if hasattr(mpath, "read_text") else open(mpath).read()
    # Point every image at the loopback server; odd items at a missing file.
    lines = []
    for line in text.splitlines():
        number = int(line.split("'asin': 'B")[1][:8])
        target = "ok.jpg" if number % 2 == 0 else "missing.jpg"
        lines.append(line.replace(f"http://example.invalid/{number}.jpg", f"{base}/{target}"))
    open(mpath, "w").write("\n".join(lines) + "\n")
    out = tmp_path / "toy"
    code = cli_main(["prepare", "amazon", "--reviews", str(rpath), "--meta", str(mpath), "--out", str(out),
                     "--images", str(out / "images"), "--image-workers", "4"])
    assert code == 0
    item = pd.read_csv(out / "toy.item", sep="\t", dtype=str, keep_default_na=False, quoting=3)
    even = item["asin:token"].str[1:].astype(int) % 2 == 0
    assert (item.loc[even, "image:token"] == "images/" + item.loc[even, "item_id:token"] + ".jpg").all()
    assert (item.loc[~even, "image:token"] == "").all()
