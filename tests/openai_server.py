"""A small real HTTP server speaking the OpenAI chat-completions and completions protocol,
for tests of the ``openai`` backend on loopback (run as a separate process)::

    python tests/openai_server.py [--port 0] [--delay SECONDS]

It prints ``PORT <n>`` once listening. Replies are deterministic functions of the
request, so tests can check what was sent:

- the answer is ``"Answer <n>: <sha of prompt>[ image:<sha of image bytes>]. "``
  followed by ``"Extra words"`` repeated; ``<n>`` counts the requests served;
- a prompt containing ``REFUSE`` gets an empty answer with ``finish_reason`` ``content_filter``;
- a prompt containing ``FLAKY`` gets HTTP 500 on its first attempt, then an answer;
- a prompt containing ``BROKEN`` always gets HTTP 500;
- a prompt containing ``SLOW`` is answered after 5 s;
- with ``--chat-only``, ``/v1/completions`` answers 404, as on chat-only servers.

``GET /stats`` returns ``{"served": n, "in_flight": i, "max_in_flight": m, "errors": e}``.
"""
import argparse
import base64
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"served": 0, "in_flight": 0, "max_in_flight": 0, "errors": 0, "seen_flaky": set()}
LOCK = threading.Lock()
DELAY = 0.0
CHAT_ONLY = False


def _digest(data) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode("utf-8")).hexdigest()[:12]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code, payload):
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed (the kill-and-resume test does that on purpose)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/stats"):
            with LOCK:
                self._send(200, {k: STATE[k] for k in ("served", "in_flight", "max_in_flight", "errors")})
        elif self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "loopback", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        request = json.loads(self.rfile.read(length) or b"{}")
        chat = self.path.endswith("/chat/completions")
        if not chat and (CHAT_ONLY or not self.path.endswith("/completions")):
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        with LOCK:
            STATE["in_flight"] += 1
            STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
        try:
            self._answer(request, chat)
        finally:
            with LOCK:
                STATE["in_flight"] -= 1

    def _answer(self, request, chat):
        image = None
        if chat:
            content = request["messages"][-1]["content"]
            if isinstance(content, list):
                prompt = "".join(c.get("text", "") for c in content if c.get("type") == "text")
                for c in content:
                    if c.get("type") == "image_url":
                        url = c["image_url"]["url"]
                        if not url.startswith("data:") or ";base64," not in url:
                            return self._send(400, {"error": {"message": "images must be data URLs"}})
                        image = base64.b64decode(url.split(";base64,", 1)[1])
            else:
                prompt = content
        else:
            prompt = request["prompt"]
        if DELAY:
            time.sleep(DELAY)
        if "SLOW" in prompt:
            time.sleep(5)
        with LOCK:
            flaky_first = "FLAKY" in prompt and prompt not in STATE["seen_flaky"]
            STATE["seen_flaky"].add(prompt)
            if flaky_first or "BROKEN" in prompt:
                STATE["errors"] += 1
                fail = True
            else:
                fail = False
                STATE["served"] += 1
                n = STATE["served"]
        if fail:
            return self._send(500, {"error": {"message": "simulated server error"}})
        if "REFUSE" in prompt:
            text, reason = "", "content_filter"
        else:
            text = f"Answer {n}: {_digest(prompt)}" + (f" image:{_digest(image)}" if image is not None else "")
            text += ". " + "Extra words " * 40
            words = text.split(" ")[: max(1, int(request.get("max_tokens") or 64))]
            text, reason = " ".join(words), "length"
        choice = {"index": 0, "finish_reason": reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        self._send(200, {"id": "cmpl-loopback", "object": "chat.completion" if chat else "text_completion",
                         "created": int(time.time()), "model": request.get("model", "loopback"), "choices": [choice],
                         "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                                   "total_tokens": len(prompt.split()) + len(text.split())}})


def main():
    global DELAY, CHAT_ONLY
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--chat-only", action="store_true", help="no /v1/completions route (404)")
    args = parser.parse_args()
    DELAY, CHAT_ONLY = args.delay, args.chat_only
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
