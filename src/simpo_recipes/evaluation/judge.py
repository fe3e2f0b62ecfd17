"""The judge every harness calls: an OpenAI-compatible endpoint named by the environment.

    JUDGE_BASE_URL  default https://api.openai.com/v1
    JUDGE_API_KEY   default $OPENAI_API_KEY
    JUDGE_MODEL     default: each benchmark's paper judge

The key only ever travels in the environment of the harness processes: it is never written to a
file, a command line or a log.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from simpo_recipes.errors import UserError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class JudgeError(UserError, RuntimeError):
    """The judge is not configured or cannot be reached; nothing was judged."""


@dataclass(frozen=True)
class Judge:
    model: str = field(metadata={"help": "Model name sent to the endpoint."})
    base_url: str = field(metadata={"help": "OpenAI-compatible endpoint, ending in /v1."})
    api_key: str = field(repr=False, metadata={"help": "Bearer key; kept out of repr, files and logs."})

    @property
    def host(self) -> str:
        """The endpoint's host[:port], without user info, path or query (nothing secret)."""
        url = urllib.parse.urlsplit(self.base_url)
        return f"{url.hostname}:{url.port}" if url.port else str(url.hostname)

    def record(self) -> dict:
        """What results.json keeps of the judge: its model name and host."""
        return {"judge": self.model, "judge_host": self.host}


def judge_from_env(default_model: str) -> Judge:
    key = os.environ.get("JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise JudgeError("no judge key: set JUDGE_API_KEY (or OPENAI_API_KEY) in the environment")
    return Judge(model=os.environ.get("JUDGE_MODEL") or default_model,
                 base_url=os.environ.get("JUDGE_BASE_URL", DEFAULT_BASE_URL).rstrip("/"), api_key=key)


def _what(raw: bytes, content_type: str) -> str:
    """How to describe a body that is not the answer expected."""
    if content_type == "text/html" or raw.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a web page, not an API: JUDGE_BASE_URL must be the API's base URL, usually ending in /v1)"
    return f"{content_type or 'a body'} {raw[:160]!r}"


def _post(judge: Judge, payload: dict, timeout: float) -> tuple[bytes, str]:
    """(body, content type) of one chat-completion request to the judge (urllib errors propagate)."""
    request = urllib.request.Request(f"{judge.base_url}/chat/completions", data=json.dumps(payload).encode(), headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {judge.api_key}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read(), response.headers.get_content_type()


def chat_completion(judge: Judge, messages: list[dict], max_tokens: int, timeout: float = 60.0,
                    temperature: float = 0.0) -> str:
    """The judge's answer to `messages` (one request; urllib and parsing errors propagate)."""
    raw, _ = _post(judge, {"model": judge.model, "messages": messages, "max_tokens": max_tokens,
                           "temperature": temperature}, timeout)
    return json.loads(raw)["choices"][0]["message"]["content"]


def check_reachable(judge: Judge, timeout: float = 60.0, logprobs: bool = False) -> None:
    """One tiny chat completion, so an unreachable, misconfigured or incompatible judge fails once,
    clearly, before a harness retries every item for minutes (or fails on an answer it cannot parse).
    `logprobs`: the harness reads the answer's token log-probabilities (AlpacaEval's weighted judge)."""
    payload = {"model": judge.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    if logprobs:
        payload |= {"logprobs": True, "top_logprobs": 2}
    where = f"judge {judge.model!r} at {judge.base_url}"
    try:
        raw, content_type = _post(judge, payload, timeout)
    except urllib.error.HTTPError as e:
        raw = e.read()
        detail = _what(raw, e.headers.get_content_type()) if raw.lstrip()[:1] == b"<" else \
            raw.decode(errors="replace")[:300]
        raise JudgeError(f"{where} answered HTTP {e.code}: {detail}. "
                         "Check JUDGE_BASE_URL, JUDGE_API_KEY and JUDGE_MODEL; nothing was judged") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise JudgeError(f"{where} cannot be reached ({reason}). "
                         "Check JUDGE_BASE_URL and the network, then rerun: judging resumes") from None
    try:
        choice = json.loads(raw)["choices"][0]
        if not isinstance(choice["message"]["content"], str):
            raise TypeError
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"{where} answered with {_what(raw, content_type)}, not an OpenAI chat completion "
                         "(choices[0].message.content): it is not an OpenAI-compatible judge; nothing was judged") from None
    if logprobs and not (choice.get("logprobs") or {}).get("content"):
        raise JudgeError(f"{where} returns no token log-probabilities (logprobs / top_logprobs), which AlpacaEval's "
                         "weighted judge reads its verdict from: use a judge model and server that return them; "
                         "nothing was judged")


def run_logged(what: str, command: list[str], log: str | Path, error: type[Exception], echo: bool = True,
               **kwargs) -> None:
    """Run a harness command; its output goes to `log` and, with `echo`, to the console (progress
    bars included). A failure raises `error` with the log's tail."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
        if kwargs.get("stdin") == subprocess.PIPE:  # fschat's gen_judgment waits for Enter
            proc.stdin.write("\n")
            proc.stdin.close()
        for chunk in iter(lambda: proc.stdout.read(256), ""):
            f.write(chunk)
            if echo:
                sys.stdout.write(chunk)
        sys.stdout.flush()
    if proc.wait() != 0:
        tail = Path(log).read_text()[-1500:]
        raise error(f"{what} failed (exit {proc.returncode}); full log: {log}\n{tail}")


def harness_env(judge: Judge, base: dict | None = None) -> dict:
    """Environment for a harness process: the judge under the names its OpenAI client reads
    (openai>=1: OPENAI_BASE_URL; alpaca_eval and openai<1: OPENAI_API_BASE), and no other
    OpenAI settings that would take precedence."""
    env = dict(os.environ if base is None else base)
    for name in ("OPENAI_API_KEYS", "OPENAI_CLIENT_CONFIG_PATH", "OPENAI_ORGANIZATION_IDS", "OPENAI_ORGANIZATION"):
        env.pop(name, None)
    return env | {"OPENAI_API_KEY": judge.api_key, "OPENAI_BASE_URL": judge.base_url,
                  "OPENAI_API_BASE": judge.base_url}
