"""A tiny deterministic OpenAI-compatible chat-completions server on 127.0.0.1, for the agents example's
optional model (examples/agents/model.py). It answers from the system message's first word and records
every request; ``fail_with`` makes it answer an error status instead."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ModelServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None
    raw_answer: bytes | None = None  # sent as is (a malformed answer)

    @staticmethod
    def answer_for(body: dict[str, Any]) -> str:
        system = next((m["content"] for m in body.get("messages", []) if m.get("role") == "system"), "")
        if "plan" in system:
            return "PLAN-NOTE: the sections follow the lighthouse through a storm."
        return "REVIEW-NOTE: the summaries read well."


@contextmanager
def model_server() -> Iterator[ModelServer]:
    state = ModelServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            if state.fail_with is not None:
                payload, status = b'{"error": "busy"}', state.fail_with
            elif state.raw_answer is not None:
                payload, status = state.raw_answer, 200
            else:
                answer = {"id": "c1", "object": "chat.completion", "model": body.get("model"),
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": state.answer_for(body)},
                                       "finish_reason": "stop"}]}
                payload, status = json.dumps(answer).encode(), 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
