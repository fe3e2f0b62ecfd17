"""Answer chat requests with a local model, resumably.

A request is {"id", "messages"[, "temperature", "seed"]}: the conversation so far, ending with a
user turn. Every engine gets the token ids of `chat.encode_prompt` (generation prompt included,
exactly one BOS), never text it could re-tokenize with a second BOS. Backends: vLLM where it is
installed and a GPU is present, batched transformers `generate` otherwise. Answers are appended
after every batch, so a rerun (also after kill -9) generates only the missing ones.

Sampling is seeded per request: each answer draws from its own generator, seeded by its request
(conversation, temperature and seed — the request's, else the settings'), so an answer does not
depend on which other requests share its batch, on their order, or on a resume.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simpo_recipes.files import append_jsonl, folder_digest, resume_rows

BACKENDS = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = field(default=32, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 decodes greedily; a request may override it."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass when sampling."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Strings (or special tokens) ending an answer."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=42, metadata={"help": "Sampling seed of requests that name none."})
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
    """What one answer depends on besides the model: its conversation, its temperature and, for a
    request that names one, its seed (the settings' seed is in the file's fingerprint)."""
    payload = [request["messages"], request.get("temperature", settings.temperature)]
    payload += [request["seed"]] if "seed" in request else []
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _sampling_seed(key: str, request: dict, settings: GenerationSettings) -> int:
    """The seed of one answer's own generator: its request key and seed, hashed to 63 bits."""
    text = f"{key}:{request.get('seed', settings.seed)}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


class _RowSampler:
    """transformers logits processor: draws each row's next token from its own generator (temperature,
    then top-p) and leaves only that token, which greedy search then picks."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device) -> None:
        import torch

        self.generators = [torch.Generator(device).manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p  # the mass before it already reaches top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
        tokens = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        picked = torch.full_like(scores, float("-inf"))
        return picked.scatter(-1, tokens[:, None], 0.0)


def _fingerprint(model_path: str | Path, settings: GenerationSettings) -> dict:
    """The model folder (files, sizes, mtimes) and the settings that change answers."""
    kept = {k: v for k, v in asdict(settings).items() if k not in ("batch_size", "backend")}
    return {"model_path": str(Path(model_path).resolve()), "files": folder_digest(model_path),
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
    """Loads the model once; `__call__(prompt_ids, temperature, seeds)` returns, per prompt, its new
    token ids and whether the engine says it hit max_new_tokens (None: `decode` tells)."""

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

    def __call__(self, prompts: list[list[int]], temperature: float,
                 seeds: list[int]) -> list[tuple[list[int], bool | None]]:
        s = self.settings
        if self.backend == "vllm":
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            params = [SamplingParams(temperature=temperature, top_p=s.top_p if temperature > 0 else 1.0,
                                     max_tokens=s.max_new_tokens, stop=self.text_stops,
                                     stop_token_ids=self.stop_ids, seed=seed) for seed in seeds]
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
            return [(list(o.outputs[0].token_ids), o.outputs[0].finish_reason == "length") for o in outs]
        import torch
        from transformers import LogitsProcessorList

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        # greedy search either way: when sampling, _RowSampler leaves one token per row
        sampler = [_RowSampler(seeds, temperature, s.top_p, self.model.device)] if temperature > 0 else []
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                max_new_tokens=s.max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=self.pad,
                do_sample=False, temperature=None, top_p=None, top_k=None,
                logits_processor=LogitsProcessorList(sampler),
                **({"stop_strings": self.text_stops, "tokenizer": self.tokenizer} if self.text_stops else {}))
        return [(row, None) for row in out[:, width:].tolist()]

    def decode(self, new_ids: list[int]) -> tuple[str, int, bool]:
        """(answer text, its length in tokens, whether it ended): cut at the first stop id, then at
        the first stop string; an answer with neither was cut by max_new_tokens."""
        end = next((k for k, t in enumerate(new_ids) if t in self.stop_ids), len(new_ids))
        ended = end < len(new_ids)
        text = self.tokenizer.decode(new_ids[:end], skip_special_tokens=True)
        cut = min((text.find(t) for t in self.text_stops if t in text), default=-1)
        if cut >= 0:
            text, ended = text[:cut], True
            end = len(self.tokenizer(text, add_special_tokens=False).input_ids)
        return text, end, ended


def generate(path: str | Path, model_path: str | Path, requests: list[dict], settings: GenerationSettings,
             desc: str | None = None) -> list[dict]:
    """Rows {id, key, output, n_tokens, truncated} for `requests`, in their order, kept in the JSONL
    file `path`; `truncated`: the answer hit max_new_tokens without an end of turn.

    Rows already in `path` for the same model folder and settings are reused; the rest are
    generated and appended after every batch. Batches (one temperature, similar lengths) are cut
    from all requests before the done ones are left out, so a resumed run batches the rest as an
    uninterrupted run would."""
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from simpo_recipes.data.chat import encode_prompt

    keys = {r["id"]: _request_key(r, settings) for r in requests}
    if len(keys) != len(requests):
        raise ValueError(f"{path}: request ids must be unique")
    done = resume_rows(path, _fingerprint(model_path, settings), keys,
                       changed="the model or the decoding settings changed")
    todo = {r["id"] for r in requests if r["id"] not in done}
    if todo:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        prompts = {r["id"]: encode_prompt(tokenizer, r["messages"]) for r in requests}
        groups: dict[float, list[dict]] = {}  # one temperature per batch, similar lengths together
        for r in sorted(requests, key=lambda r: len(prompts[r["id"]])):
            groups.setdefault(r.get("temperature", settings.temperature), []).append(r)
        size = settings.batch_size
        batches = [(t, [r for r in g[i: i + size] if r["id"] in todo])
                   for t, g in groups.items() for i in range(0, len(g), size)]
        batches = [(t, batch) for t, batch in batches if batch]
        engine = _Engine(model_path, settings)
        for temperature, batch in tqdm(batches, desc=desc or f"generating {Path(model_path).name}"):
            seeds = [_sampling_seed(keys[r["id"]], r, settings) for r in batch]
            rows = []
            for r, (new_ids, hit_limit) in zip(batch, engine([prompts[r["id"]] for r in batch], temperature, seeds)):
                text, n_tokens, ended = engine.decode(new_ids)
                rows.append({"id": r["id"], "key": keys[r["id"]], "output": text, "n_tokens": n_tokens,
                             "truncated": hit_limit if hit_limit is not None else not ended})
            append_jsonl(path, rows)
            done.update((row["id"], row) for row in rows)
    return [done[r["id"]] for r in requests]

