"""Answer chat requests with a local model, resumably.

A request is {"id", "messages"[, "temperature", "seed"]}: the conversation so far, ending with a
user turn. Every engine gets the token ids of `chat.encode_prompt` (generation prompt included,
exactly one BOS), never text it could re-tokenize with a second BOS. Backends: vLLM where it is
installed and a GPU is present, batched transformers `generate` otherwise. Answers are appended
after every batch, so a rerun (also after kill -9) generates only the missing ones.

Sampling is seeded per request (its own seed, else the settings'): vLLM gives each request a
generator of its own, and so does `RowSampler` under transformers, so an answer depends on its
prompt and seed, not on the other requests of its batch, their order, or a resume.

Two decoding modes (`DECODING_MODES`) for a recipe's `generation:` block:
- `as_configured`: sample at the configured temperature and top_p (greedy at temperature 0);
- `reference`: decode the way the paper's AlpacaEval numbers were produced. alpaca-eval 0.6.2's
  vLLM decoder (`decoders/vllm_local.py`) built `SamplingParams(max_tokens, **kwargs)` and, when the
  config said `do_sample`, then set `use_beam_search = True` on it: with vLLM <= 0.6.2 that is beam
  search of width best_of = 1 on the temperature-scaled log-probs, length_penalty 1 and
  early_stopping False, not sampling. `AlpacaEvalBeam` replays that search step by step on either
  backend.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simpo_recipes.errors import UserError
from simpo_recipes.files import append_jsonl, folder_digest, resume_rows

BACKENDS = ("auto", "transformers", "vllm")
DECODING_MODES = ("reference", "as_configured")
SAMPLING_EPS = 1e-5  # vLLM: a temperature below this decodes greedily (beam search then uses 1.0)


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = field(default=32, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 decodes greedily; a request may override it."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass when sampling."})
    stop: tuple[str, ...] = field(default=(), metadata={"help": "Strings (or special tokens) ending an answer."})
    batch_size: int = field(default=32, metadata={"help": "Prompts per generate call."})
    seed: int = field(default=42, metadata={"help": "Sampling seed of requests that name none."})
    backend: str = field(default="auto", metadata={"help": "auto: vLLM if installed and on GPU, else transformers."})
    beam_search: bool = field(default=False, metadata={
        "help": "alpaca-eval 0.6.2's do_sample quirk: beam search of width 1 on temperature-scaled log-probs."})

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens <= 0 or self.batch_size <= 0:
            raise ValueError(f"invalid generation settings {self}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        object.__setattr__(self, "stop", tuple(self.stop))


def from_recipe(generation, mode: str = "as_configured", **overrides) -> GenerationSettings:
    """Settings from a recipe's `generation:` block in decoding `mode` (`DECODING_MODES`):
    `reference` turns on the beam search the recipe's `reference_decoding` names."""
    if mode not in DECODING_MODES:
        raise ValueError(f"decoding mode {mode!r}: choose one of {', '.join(DECODING_MODES)}")
    return GenerationSettings(temperature=generation.temperature, top_p=generation.top_p,
                              max_new_tokens=generation.max_new_tokens, stop=tuple(generation.stop),
                              beam_search=mode == "reference" and generation.reference_decoding == "beam_search",
                              **overrides)


def describe(settings: GenerationSettings, temperature: float | None = None) -> str:
    """One line for logs and results: what the engine really does."""
    t = settings.temperature if temperature is None else temperature
    if settings.beam_search:
        return f"beam search, width 1, on log-probs at temperature {t if t >= SAMPLING_EPS else 1.0}"
    return f"sampling at temperature {t}, top_p {settings.top_p}" if t > 0 else "greedy"


def vllm_sampling(settings: GenerationSettings, temperature: float, stop_ids: list[int],
                  text_stops: list[str]) -> dict:
    """`vllm.SamplingParams` keyword arguments. Sampling: the whole answer in one request. Beam
    search: one step (the two best next tokens with their processed, i.e. temperature-scaled,
    log-probs; the engine is built with logprobs_mode="processed_logprobs"), AlpacaEvalBeam does the rest."""
    if settings.beam_search:
        return {"max_tokens": 1, "logprobs": 2, "temperature": temperature if temperature >= SAMPLING_EPS else 1.0,
                "top_p": settings.top_p, "seed": settings.seed}
    return {"temperature": temperature, "top_p": settings.top_p if temperature > 0 else 1.0,
            "max_tokens": settings.max_new_tokens, "stop": text_stops, "stop_token_ids": stop_ids, "seed": settings.seed}


def processed_logprobs(logits, temperature: float, top_p: float):
    """log-softmax of the logits as vLLM's sampler processed them: divided by the temperature
    (1.0 below SAMPLING_EPS), tokens outside the top_p mass masked, in float32."""
    import torch

    logits = logits.float() / (temperature if temperature >= SAMPLING_EPS else 1.0)
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=False)
        mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = mass <= 1 - top_p
        drop[..., -1] = False  # the most likely token always stays
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, -float("inf")))
    return torch.log_softmax(logits, dim=-1)


class RowSampler:
    """transformers logits processor: draws each row's next token from the row's own generator
    (temperature, then top-p, as vLLM samples) and leaves only that token, which greedy search then
    picks; so a row's answer depends on its prompt and seed only."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device) -> None:
        import torch

        self.generators = [torch.Generator(device).manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        probs = processed_logprobs(scores, self.temperature, self.top_p).exp()
        tokens = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        return torch.full_like(scores, float("-inf")).scatter(-1, tokens[:, None], 0.0)


def transformers_sampling(temperature: float, top_p: float, seeds: list[int], device) -> dict:
    """`generate` keyword arguments: greedy search, which samples (from a temperature of
    SAMPLING_EPS on, as vLLM does) through `RowSampler`, one generator per row seeded by `seeds`."""
    from transformers import LogitsProcessorList

    sampler = [RowSampler(seeds, temperature, top_p, device)] if temperature >= SAMPLING_EPS else []
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None,
            "logits_processor": LogitsProcessorList(sampler)}


class AlpacaEvalBeam:
    """One prompt's beam search as vLLM <= 0.6.2 ran it for alpaca-eval 0.6.2 (beam width 1).

    Each step gets the two best next tokens of the running sequence with their log-probs. A child
    that ends (a stop id, or max_new_tokens reached) joins the finished ones, of which the best
    scoring one is kept; the best running child continues. The search stops when nothing runs, or
    when the kept finished sequence scores at least as well as the running one (early_stopping
    False). Score = cumulative log-prob / (prompt + output tokens), a final EOS not counted."""

    def __init__(self, prompt_len: int, eos_id: int | None, stop_ids: list[int], max_new_tokens: int) -> None:
        self.prompt_len, self.eos_id, self.stop_ids, self.max_new_tokens = prompt_len, eos_id, set(stop_ids), max_new_tokens
        self.running: tuple[list[int], float] = ([], 0.0)
        self.finished: tuple[list[int], float] | None = None
        self.done = False

    def score(self, tokens: list[int], cumulative: float) -> float:
        length = self.prompt_len + len(tokens) - (1 if tokens and tokens[-1] == self.eos_id else 0)
        return cumulative / length

    def step(self, candidates: list[tuple[int, float]]) -> None:
        """`candidates`: the two (token, log-prob) best continuations of the running sequence."""
        tokens, cumulative = self.running
        children = [(tokens + [t], cumulative + lp) for t, lp in candidates]
        ended = [c[0][-1] in self.stop_ids or len(c[0]) >= self.max_new_tokens for c in children]
        finished = ([self.finished] if self.finished else []) + [c for c, e in zip(children, ended) if e]
        finished.sort(key=lambda c: self.score(*c), reverse=True)
        running = sorted((c for c, e in zip(children, ended) if not e), key=lambda c: self.score(*c), reverse=True)
        self.finished = finished[0] if finished else None
        if not running or (self.finished and self.score(*self.finished) >= self.score(*running[0])):
            self.done = True
        else:
            self.running = running[0]

    def result(self) -> list[int]:
        return self.finished[0] if self.finished else self.running[0]

    @property
    def next_token(self) -> int:
        return self.running[0][-1]


def _request_key(request: dict, settings: GenerationSettings) -> str:
    """What one answer depends on besides the model: its conversation, its temperature and, for a
    request that names one, its seed (the settings' seed is in the file's fingerprint)."""
    payload = [request["messages"], request.get("temperature", settings.temperature)]
    payload += [request["seed"]] if "seed" in request else []
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


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
    """Loads the model once; `__call__(prompt_ids, temperature, seeds)` returns new token ids per prompt."""

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

            # beam search reads the temperature-scaled log-probs, as vLLM <= 0.6.2 computed them
            extra = {"logprobs_mode": "processed_logprobs"} if settings.beam_search else {}
            self.llm = LLM(model=str(model_path), seed=settings.seed, **extra)
        else:
            from transformers import AutoModelForCausalLM

            device = "cuda" if torch.cuda.is_available() else "cpu"
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto").to(device).eval()
            self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]

    def __call__(self, prompts: list[list[int]], temperature: float, seeds: list[int]) -> list[list[int]]:
        if self.settings.beam_search:
            return self._beam_search(prompts, temperature)
        if self.backend == "vllm":
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            kwargs = vllm_sampling(self.settings, temperature, self.stop_ids, self.text_stops)
            by_seed = {seed: SamplingParams(**kwargs | {"seed": seed}) for seed in dict.fromkeys(seeds)}
            params = next(iter(by_seed.values())) if len(by_seed) == 1 else [by_seed[seed] for seed in seeds]
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
            return [list(o.outputs[0].token_ids) for o in outs]
        import torch

        ids, mask = self._left_padded(prompts)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=self.settings.max_new_tokens,
                eos_token_id=self.stop_ids, pad_token_id=self.pad,
                **({"stop_strings": self.text_stops, "tokenizer": self.tokenizer} if self.text_stops else {}),
                **transformers_sampling(temperature, self.settings.top_p, seeds, self.model.device))
        return out[:, ids.shape[1]:].tolist()

    def _left_padded(self, prompts: list[list[int]]):
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return ids.to(self.model.device), mask.to(self.model.device)

    def _beam_search(self, prompts: list[list[int]], temperature: float) -> list[list[int]]:
        """AlpacaEvalBeam on every prompt, one model step (or one vLLM request) per token."""
        s = self.settings
        beams = [AlpacaEvalBeam(len(p), self.tokenizer.eos_token_id, self.stop_ids, s.max_new_tokens) for p in prompts]
        if self.backend == "vllm":
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            params = SamplingParams(**vllm_sampling(s, temperature, self.stop_ids, self.text_stops))
            while live := [(p, b) for p, b in zip(prompts, beams) if not b.done]:
                outs = self.llm.generate([TokensPrompt(prompt_token_ids=p + b.running[0]) for p, b in live], params,
                                         use_tqdm=False)
                for (_, beam), out in zip(live, outs):
                    top = sorted(out.outputs[0].logprobs[0].items(), key=lambda kv: kv[1].rank)[:2]
                    beam.step([(token, logprob.logprob) for token, logprob in top])
            return [b.result() for b in beams]
        import torch

        ids, mask = self._left_padded(prompts)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
            while True:
                top = processed_logprobs(out.logits[:, -1], temperature, s.top_p).topk(2, dim=-1)
                for k, beam in enumerate(beams):
                    if not beam.done:
                        beam.step(list(zip(top.indices[k].tolist(), top.values[k].tolist())))
                if all(b.done for b in beams):
                    return [b.result() for b in beams]
                step = torch.tensor([[self.pad if b.done else b.next_token] for b in beams], device=ids.device)
                mask = torch.cat([mask, torch.ones_like(step)], dim=-1)
                positions = positions[:, -1:] + 1
                out = self.model(input_ids=step, attention_mask=mask, position_ids=positions, cache=out.cache,
                                 use_cache=True)

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

    hub_name = not Path(model_path).exists() and str(model_path).count("/") == 1  # loaded from the hub or its cache
    if not hub_name and not (Path(model_path) / "config.json").is_file():
        raise UserError(f"no model in {model_path} (no config.json): train it first (make train) or fix the path")
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
            seeds = [r.get("seed", settings.seed) for r in batch]
            rows = []
            for r, new_ids in zip(batch, engine([prompts[r["id"]] for r in batch], temperature, seeds)):
                text, n_tokens, ended = engine.decode(new_ids)
                rows.append({"id": r["id"], "key": keys[r["id"]], "output": text, "n_tokens": n_tokens,
                             "truncated": not ended})
            append_jsonl(path, rows)
            done.update((row["id"], row) for row in rows)
    return [done[r["id"]] for r in requests]
