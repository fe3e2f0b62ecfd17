"""A judge that decides by program, served as an OpenAI-compatible endpoint on 127.0.0.1.

The harnesses run their own code against it exactly as against a remote GPT-4-class judge. It
recognises each harness's judge prompt and answers in that harness's protocol:
- AlpacaEval 2 (weighted judge): the token "m" or "M" with top_logprobs for both;
- Arena-Hard v0.1: a verdict label, [[A>>B]] ... [[B>>A]];
- MT-Bench single-answer grading: "Rating: [[r]]".
`prefer(question, a, b)` is the probability that answer a is the better one; `rate(question,
answer)` a score from 1 to 10. Requests without the expected bearer key get 401.
"""
from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALPACA = re.compile(r'"instruction": """(?P<q>.*)""",\n}\n\n## Model Outputs.*?"model_identifier": "m",\n\s*"output": '
                    r'"""(?P<a>.*)"""\n\s*},\n\s*{\n\s*"model_identifier": "M",\n\s*"output": """(?P<b>.*)"""\n\s*}\n}',
                    re.S)
ARENA = re.compile(r"<\|User Prompt\|>\n(?P<q>.*)\n\n<\|The Start of Assistant A's Answer\|>\n(?P<a>.*)\n"
                   r"<\|The End of Assistant A's Answer\|>\n\n<\|The Start of Assistant B's Answer\|>\n(?P<b>.*)\n"
                   r"<\|The End of Assistant B's Answer\|>", re.S)
MT_SINGLE = re.compile(r"\[Question\]\n(?P<q>.*?)\n\n\[The Start of (?:Reference Answer\].*?\n\n\[The Start of )?"
                       r"Assistant's Answer\]\n(?P<a>.*)\n\[The End of Assistant's Answer\]", re.S)
MT_TURN_2 = re.compile(r"### User:\n(?P<q>.*)\n\n### Assistant A:\n(?P<a>.*)\n\n"
                       r"<\|The End of Assistant A's Conversation", re.S)


def arena_verdict(p: float) -> str:
    """Arena-Hard label for P(A better) = p."""
    return "A>>B" if p >= 0.9 else "A>B" if p > 0.5 else "A=B" if p == 0.5 else "B>A" if p > 0.1 else "B>>A"


class ProgramJudge:
    """`with ProgramJudge(prefer, rate, api_key) as judge:` serves on `judge.base_url` (".../v1")."""

    def __init__(self, prefer: Callable[[str, str, str], float], rate: Callable[[str, str], int] | None = None,
                 api_key: str | None = None) -> None:
        self.prefer, self.rate, self.api_key = prefer, rate, api_key
        self.calls: dict[str, int] = {}
        self.base_url = ""
        self._lock = threading.Lock()

    def __enter__(self) -> ProgramJudge:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())  # port 0: any free port
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, messages: list[dict]) -> tuple[str, dict | None, str]:
        """(content, logprobs, protocol) for one chat request."""
        text = "\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))
        if match := ALPACA.search(text):
            p = self.prefer(match["q"], match["a"], match["b"])
            top = [{"token": t, "logprob": math.log(q), "bytes": list(t.encode())}
                   for t, q in (("m", p), ("M", 1 - p)) if q > 0]  # absent token: probability 0
            token = "m" if p >= 0.5 else "M"
            logprobs = {"content": [{"token": token, "logprob": next(t["logprob"] for t in top if t["token"] == token),
                                     "bytes": list(token.encode()), "top_logprobs": top}]}
            return token, logprobs, "alpaca_eval"
        if match := ARENA.search(text):
            verdict = arena_verdict(self.prefer(match["q"], match["a"], match["b"]))
            return f"My final verdict: [[{verdict}]]", None, "arena_hard"
        if self.rate is not None and (match := MT_TURN_2.search(text) or MT_SINGLE.search(text)):
            question = match["q"].split("\n\n### User:\n")[-1]  # turn 2: the last user question
            return f"Rating: [[{self.rate(question, match['a'])}]]", None, "mt_bench"
        if text.strip() == "ping":  # the reachability check run before judging
            return "pong", None, "ping"
        raise ValueError("not a judge prompt of AlpacaEval 2, Arena-Hard v0.1 or MT-Bench")

    def _handler(self):
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: the harnesses print progress
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if judge.api_key is not None and self.headers.get("Authorization") != f"Bearer {judge.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}",
                                                      "type": "invalid_request_error"}})
                try:
                    content, logprobs, protocol = judge.answer(request.get("messages", []))
                except ValueError as e:
                    return self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})
                if logprobs is None and request.get("logprobs"):  # as OpenAI's API: asked for, they come
                    token = {"token": content, "logprob": 0.0, "bytes": list(content.encode())}
                    logprobs = {"content": [token | {"top_logprobs": [token]}]}
                with judge._lock:
                    judge.calls[protocol] = judge.calls.get(protocol, 0) + 1
                self._send(200, {
                    "id": "chatcmpl-local", "object": "chat.completion", "created": 0, "model": request.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "logprobs": logprobs, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        return Handler
