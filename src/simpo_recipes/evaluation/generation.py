"""Answer chat requests with a local model, resumably.

A request is {"id", "messages"[, "temperature"]}: the conversation so far, ending with a user turn.
Every engine gets the token ids of `chat.encode_prompt` (generation prompt included, exactly one
BOS), never text it could re-tokenize with a second BOS. Backends: vLLM where it is installed and a
GPU is present, batched transformers `generate` otherwise. Answers are saved after every batch, so
a rerun generates only the missing ones.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simpo_recipes.errors import UserError
from simpo_recipes.files import read_jsonl, write_atomic, write_jsonl

BACKENDS = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = field(default=32, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 decodes greedily; a request may override it."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass when sampling."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Strings (or special tokens) ending an answer."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=42, metadata={"help": "Sampling seed."})
    backend: str = field(default="auto", metadata={"help": "auto: vLLM if installed and on GPU, else transformers."})

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise ValueError(f"invalid generation settings {self}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        object.__setattr__(self, "stop", tuple(self.stop))


def from_recipe(generation, **overrides) -> GenerationSettings:
    """Settings from a recipe's `generation:` block."""
    return GenerationSettings(temperature=generation.temperature, top_p=generation.top_p,
                              max_new_tokens=generation.max_new_tokens,
                              stop=tuple(generation.stop), **overrides)


def _request_key(request: dict, settings: GenerationSettings) -> str:
    """What one answer depends on besides the model: its conversation and its temperature."""
    payload = [request["messages"], request.get("temperature", settings.temperature)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _fingerprint(model_path: str | Path, settings: GenerationSettings) -> dict:
    """The model folder (files, sizes, mtimes) and the settings that change answers."""
    root = Path(model_path).resolve()
    files = sorted(f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                   for p in root.rglob("*") if p.is_file() and "checkpoint-" not in str(p.relative_to(root)))
    kept = {k: v for k, v in asdict(settings).items() if k not in ("batch_size", "backend")}
    return {"model_path": str(root), "files": hashlib.sha256("\n".join(files).encode()).hexdigest(),
            "settings": json.loads(json.dumps(kept))}


def _stops(tokenizer, model_eos, stop: tuple[str, ...]) -> tuple[list[int], list[str]]:
    """(stop ids, stop strings): the model's end-of-turn ids plus every stop string that is one
    special token (<|eot_id|>, <end_of_turn>); the other strings are matched in the text."""
    from simpo_recipes.data.chat import (
        _special_tokens,  # all_special_ids misses Llama-3's <|eot_id|>
    )

    ids = [model_eos] if isinstance(model_eos, int) else list(model_eos or [tokenizer.eos_token_id])
    specials, texts = set(_special_tokens(tokenizer)), []
    for text in stop:
        if text in specials:
            token_id = tokenizer.convert_tokens_to_ids(text)
            ids += [] if token_id in ids else [token_id]
        else:
            texts.append(text)
    return ids, texts


class _Engine:
    """Loads the model once; `__call__(prompt_ids, temperature)` returns new token ids per prompt."""

    def __init__(self, model_path: str | Path, settings: GenerationSettings) -> None:
        import torch
        from transformers import AutoTokenizer, GenerationConfig

        self.settings = settings
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        try:
            eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        except OSError:  # no generation_config.json: the tokenizer's eos ends a turn
            eos = None
        self.stop_ids, self.text_stops = _stops(self.tokenizer, eos, settings.stop)
        backend = settings.backend
        if backend == "auto":
            backend = "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "transformers"
        self.backend = backend
        if backend == "vllm":
            from vllm import LLM

            self.llm = LLM(model=str(model_path), seed=settings.seed)
        else:
            from transformers import AutoModelForCausalLM

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto").to(device).eval()
            self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]

    def __call__(self, prompts: list[list[int]], temperature: float) -> list[list[int]]:
        s = self.settings
        if self.backend == "vllm":
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            params = SamplingParams(temperature=temperature, top_p=s.top_p if temperature > 0 else 1.0,
                                    max_tokens=s.max_new_tokens, stop=self.text_stops, stop_token_ids=self.stop_ids,
                                    seed=s.seed)
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
            return [list(o.outputs[0].token_ids) for o in outs]
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        sampling = ({"do_sample": True, "temperature": temperature, "top_p": s.top_p} if temperature > 0 else
                    {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                max_new_tokens=s.max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=self.pad,
                **({"stop_strings": self.text_stops, "tokenizer": self.tokenizer} if self.text_stops else {}), **sampling)
        return out[:, width:].tolist()

    def decode(self, new_ids: list[int]) -> tuple[str, int]:
        """(answer text, its length in tokens): cut at the first stop id, then at the first stop string."""
        end = next((k for k, t in enumerate(new_ids) if t in self.stop_ids), len(new_ids))
        text = self.tokenizer.decode(new_ids[:end], skip_special_tokens=True)
        cut = min((text.find(t) for t in self.text_stops if t in text), default=-1)
        if cut >= 0:
            text = text[:cut]
            end = len(self.tokenizer(text, add_special_tokens=False).input_ids)
        return text, end


def generate(path: str | Path, model_path: str | Path, requests: list[dict], settings: GenerationSettings,
             desc: str | None = None) -> list[dict]:
    """Rows {id, key, output, n_tokens} for `requests`, in their order, kept in the JSONL file `path`.

    Rows already in `path` for the same model folder and settings are reused; the rest are
    generated (similar lengths and one temperature per batch) and saved after every batch."""
    from tqdm.auto import tqdm

    from simpo_recipes.data.chat import encode_prompt

    path = Path(path)
    if not (Path(model_path) / "config.json").is_file():
        raise UserError(f"no model in {model_path} (no config.json): train it first (make train) or fix the path")
    meta_path = path.with_suffix(".meta.json")
    fingerprint = _fingerprint(model_path, settings)
    keys = {r["id"]: _request_key(r, settings) for r in requests}
    if len(keys) != len(requests):
        raise ValueError(f"{path}: request ids must be unique")
    done: dict[str, dict] = {}
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == fingerprint:
        done = {row["id"]: row for row in read_jsonl(path) if keys.get(row["id"], row["key"]) == row["key"]}
    elif path.exists():
        print(f"{path}: the model or the decoding settings changed since it was written; regenerating")
    todo = [r for r in requests if r["id"] not in done]
    if todo:
        engine = _Engine(model_path, settings)
        prompts = {r["id"]: encode_prompt(engine.tokenizer, r["messages"]) for r in todo}
        groups: dict[float, list[dict]] = {}  # one temperature per batch, similar lengths together
        for r in sorted(todo, key=lambda r: len(prompts[r["id"]])):
            groups.setdefault(r.get("temperature", settings.temperature), []).append(r)
        size = settings.batch_size
        batches = [(t, g[i: i + size]) for t, g in groups.items() for i in range(0, len(g), size)]
        write_atomic(meta_path, json.dumps(fingerprint, indent=1))
        for temperature, batch in tqdm(batches, desc=desc or f"generating {Path(model_path).name}"):
            for r, new_ids in zip(batch, engine([prompts[r["id"]] for r in batch], temperature)):
                text, n_tokens = engine.decode(new_ids)
                done[r["id"]] = {"id": r["id"], "key": keys[r["id"]], "output": text, "n_tokens": n_tokens}
            write_jsonl(path, list(done.values()))
    return [done[r["id"]] for r in requests]

