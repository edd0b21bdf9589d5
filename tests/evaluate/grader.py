"""A deterministic OpenAI-compatible *judge* for evaluation tests (stdlib HTTP server on a thread).

It grades by one rule, so tests know every number in advance: an answer is good when it contains
the reference answer shown to the judge.
- rubric prompts (``<response>``): "Score: 5" when the response contains ``<reference_answer>``, else "Score: 1";
- pairwise prompts (``<response_a>``/``<response_b>``): the side that contains the reference wins;
  both or neither: ``[[C]]``. With ``always="A"`` it always answers ``[[A]]`` (a position-biased judge).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _tag(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>\n(.*?)\n</{name}>", text, re.DOTALL)
    return m.group(1) if m else None


def grade(content: str, always: str | None = None) -> str:
    ref = (_tag(content, "reference_answer") or "").strip().casefold()
    a, b = _tag(content, "response_a"), _tag(content, "response_b")
    if a is not None and b is not None:
        if always:
            return f"Position decides.\n[[{always}]]"
        ga, gb = ref in a.casefold(), ref in b.casefold()
        return "Both alike.\n[[C]]" if ga == gb else ("A has it.\n[[A]]" if ga else "B has it.\n[[B]]")
    resp = (_tag(content, "response") or "").casefold()
    return "Rationale: contains the reference.\nScore: 5" if ref and ref in resp else "Rationale: wrong.\nScore: 1"


class Grader:
    def __init__(self, always: str | None = None):
        self.always = always
        self.requests = 0
        grader = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                grader.requests += 1
                text = grade(body["messages"][-1]["content"], grader.always)
                reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model"),
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Grader":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
