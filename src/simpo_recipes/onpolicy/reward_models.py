"""Reward models that score on-policy samples, behind one interface, and the resumable scoring loop.

`RewardModel.score(prompts, responses)` takes a batch of prompts, each with its N answers, and
returns one score per answer (None: not scored, e.g. longer than the model reads — never cut).
Scores are deterministic: models run in eval mode, a judge is asked at temperature 0.

- sequence_classification: a transformers `AutoModelForSequenceClassification` reads the whole
  conversation (its own chat template, one BOS) and gives one score (ArmoRM: its `score` output);
- pairwise: PairRM-style, a sequence-classification cross-encoder reads a prompt and two answers
  and its logit says how much the first beats the second; an answer's score is its mean win
  probability against every other answer, asked in both orders (position bias cancels);
- judge: an OpenAI-compatible endpoint (the evaluation's JUDGE_BASE_URL / JUDGE_API_KEY /
  JUDGE_MODEL) rates each answer 1-10 in MT-Bench's single-answer protocol;
- program: a Python function `module:function(prompt, response) -> float` (the demo's judge).
"""
from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
import time
import urllib.error
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from simpo_recipes.errors import UserError
from simpo_recipes.files import append_jsonl, folder_digest, resume_rows
from simpo_recipes.onpolicy.config import RewardModelConfig


class RewardModelError(UserError, RuntimeError):
    """The reward model cannot be loaded or used; the message says why and what to do."""


class RewardModel(ABC):
    def __init__(self, config: RewardModelConfig) -> None:
        self.config = config

    @abstractmethod
    def score(self, prompts: list[str], responses: list[list[str]]) -> list[list[float | None]]:
        """One score per answer of each prompt (higher is better)."""


class _Classifier:
    """A transformers sequence-classification model that scores token-id sequences in batches of
    similar length, right-padded; a sequence holding the pad id is scored alone, so padding never
    changes a score."""

    def __init__(self, config: RewardModelConfig) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        name, remote = config.name, {"trust_remote_code": config.trust_remote_code}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name, **remote)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name, dtype=config.dtype, output_loading_info=True, **remote)
        except ValueError as e:
            if "custom code" in str(e) and not config.trust_remote_code:
                raise RewardModelError(
                    f"reward model {name!r} ships its own model code: if you trust it, set "
                    "`reward_model: {trust_remote_code: true}` in the recipe's onpolicy block") from None
            raise RewardModelError(f"reward model {name!r}: {e}") from None
        except OSError as e:
            raise RewardModelError(f"reward model {name!r} cannot be loaded ({str(e)[:300]}); download it or "
                                   "point reward_model.name at a local folder") from None
        missing = sorted(info["missing_keys"])
        if missing:
            custom = getattr(model.config, "auto_map", None) and not config.trust_remote_code
            raise RewardModelError(
                f"reward model {name!r}: {len(missing)} weight(s) are not in the checkpoint (e.g. {missing[0]}), so "
                "they would be random: it is not a trained sequence-classification model for transformers' own "
                "class" + ("; its config names model code of its own (auto_map): if you trust it, set "
                           "`reward_model: {trust_remote_code: true}` in the recipe's onpolicy block" if custom else ""))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(device).eval()
        pad = model.config.pad_token_id
        self.pad = pad if pad is not None else self.tokenizer.pad_token_id
        if pad is None and self.pad is not None:
            self.model.config.pad_token_id = self.pad  # transformers batches only with a pad id
        self.max_length = config.max_length or getattr(model.config, "max_position_embeddings", None)
        self.batch_size = config.batch_size

    def __call__(self, sequences: list[list[int]]) -> list[float | None]:
        import torch

        fits = [i for i, s in enumerate(sequences) if self.max_length is None or len(s) <= self.max_length]
        alone = [i for i in fits if self.pad is None or self.pad in sequences[i]]
        batched = sorted(set(fits) - set(alone), key=lambda i: len(sequences[i]))
        groups = [batched[k: k + self.batch_size] for k in range(0, len(batched), self.batch_size)]
        scores: list[float | None] = [None] * len(sequences)
        for group in groups + [[i] for i in alone]:
            width = max(len(sequences[i]) for i in group)
            ids = [sequences[i] + [self.pad] * (width - len(sequences[i])) for i in group]
            mask = [[1] * len(sequences[i]) + [0] * (width - len(sequences[i])) for i in group]
            device = self.model.device
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor(ids, device=device),
                                 attention_mask=torch.tensor(mask, device=device))
            for i, value in zip(group, self._values(out)):
                scores[i] = value
        return scores

    def _values(self, out) -> list[float]:
        score = getattr(out, "score", None)  # ArmoRM's custom output: the gated preference score
        if score is None:
            if out.logits.shape[-1] != 1:
                raise RewardModelError(f"reward model {self.model.name_or_path!r} has {out.logits.shape[-1]} labels; "
                                       "a reward model gives one score")
            score = out.logits[:, 0]
        return score.float().reshape(-1).tolist()


class _ClassifierReward(RewardModel):
    def __init__(self, config: RewardModelConfig) -> None:
        super().__init__(config)
        self.classifier = _Classifier(config)


class SequenceClassificationReward(_ClassifierReward):

    def score(self, prompts, responses):
        from simpo_recipes.data.chat import encode_conversation

        tokenizer = self.classifier.tokenizer
        sequences = [encode_conversation(tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": r}])[0]
                     for p, answers in zip(prompts, responses) for r in answers]
        flat = iter(self.classifier(sequences))
        return [[next(flat) for _ in answers] for answers in responses]


def pair_text(prompt: str, first: str, second: str) -> str:
    """What a pairwise ranker reads: PairRM's layout of source and two candidates."""
    return f"<|source|>{prompt}<|candidate1|>{first}<|candidate2|>{second}"


def aggregate_pairwise(n: int, p_first_wins: dict[tuple[int, int], float | None]) -> list[float | None]:
    """Score of each of n answers: its mean win probability over all others, each pair asked in
    both orders, (P(i before j wins) + 1 − P(j before i wins)) / 2; pairs not compared are left out."""
    scores = []
    for i in range(n):
        wins = [(p_first_wins[i, j] + 1 - p_first_wins[j, i]) / 2 for j in range(n)
                if j != i and p_first_wins[i, j] is not None and p_first_wins[j, i] is not None]
        scores.append(sum(wins) / len(wins) if wins else None)
    return scores


class PairwiseReward(_ClassifierReward):
    def score(self, prompts, responses):
        tokenizer = self.classifier.tokenizer
        pairs = [(k, i, j) for k, answers in enumerate(responses) for i in range(len(answers))
                 for j in range(len(answers)) if i != j]
        sequences = [tokenizer(pair_text(prompts[k], responses[k][i], responses[k][j])).input_ids for k, i, j in pairs]
        p = {pair: None if logit is None else 1 / (1 + math.exp(-logit))
             for pair, logit in zip(pairs, self.classifier(sequences))}
        return [aggregate_pairwise(n, {(i, j): p[k, i, j] for i in range(n) for j in range(n) if i != j})
                for k, n in enumerate(len(answers) for answers in responses)]


JUDGE_SYSTEM = "You are a helpful assistant."
JUDGE_PROMPT = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, "
    "you must rate the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for "
    "example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]")
RATING = re.compile(r"\[\[(\d+(?:\.\d+)?)\]\]")


class JudgeReward(RewardModel):
    """Rates each answer with the judge endpoint, `batch_size` requests at a time; an answer the
    judge gives no rating for (3 tries) stays unscored; an unreachable judge stops the run."""

    attempts = 3

    def __init__(self, config: RewardModelConfig) -> None:
        from simpo_recipes.evaluation.judge import check_reachable, judge_from_env

        super().__init__(config)
        self.judge = judge_from_env(config.name)
        check_reachable(self.judge)

    def _rate(self, prompt: str, answer: str) -> float | None:
        from simpo_recipes.evaluation.judge import JudgeError, chat_completion

        messages = [{"role": "system", "content": JUDGE_SYSTEM},
                    {"role": "user", "content": JUDGE_PROMPT.format(question=prompt, answer=answer)}]
        for attempt in range(self.attempts):
            try:
                match = RATING.search(chat_completion(self.judge, messages, max_tokens=1024))
            except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as e:
                if attempt == self.attempts - 1:
                    raise JudgeError(f"judge {self.judge.model!r} at {self.judge.base_url} failed {self.attempts} "
                                     f"times ({getattr(e, 'reason', e)}); rerun: scoring resumes") from None
                time.sleep(2 ** attempt)
                continue
            if match:
                return float(match[1])
        return None

    def score(self, prompts, responses):
        items = [(p, r) for p, answers in zip(prompts, responses) for r in answers]
        with ThreadPoolExecutor(max_workers=self.config.batch_size) as pool:
            flat = iter(list(pool.map(lambda item: self._rate(*item), items)))
        return [[next(flat) for _ in answers] for answers in responses]


class ProgramReward(RewardModel):
    def __init__(self, config: RewardModelConfig) -> None:
        super().__init__(config)
        module, _, function = config.name.partition(":")
        try:
            self.function = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as e:
            raise RewardModelError(f"reward_model.name {config.name!r}: cannot import it ({e})") from None

    def score(self, prompts, responses):
        return [[float(self.function(p, r)) for r in answers] for p, answers in zip(prompts, responses)]


REWARD_MODELS = {"sequence_classification": SequenceClassificationReward, "pairwise": PairwiseReward,
                 "judge": JudgeReward, "program": ProgramReward}


def load_reward_model(config: RewardModelConfig) -> RewardModel:
    return REWARD_MODELS[config.type](config)


def fingerprint(config: RewardModelConfig) -> dict:
    """What the scores depend on: the reward model (a local folder by its files), never a key."""
    what = {"type": config.type, "name": config.name}
    if config.type in ("sequence_classification", "pairwise"):
        local = Path(config.name).is_dir()
        what |= {"dtype": config.dtype, "max_length": config.max_length,
                 "files": folder_digest(config.name) if local else None}
    elif config.type == "judge":
        from simpo_recipes.evaluation.judge import judge_from_env

        judge = judge_from_env(config.name)
        what |= {"model": judge.model, "base_url": judge.base_url,
                 "prompt": hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()[:16]}
    return what


def _samples_key(prompt: str, responses: list[str]) -> str:
    return hashlib.sha256(json.dumps([prompt, responses]).encode()).hexdigest()[:16]


def score_samples(path: str | Path, config: RewardModelConfig, prompts: list[dict],
                  samples: dict[str, list[dict]]) -> dict[str, list[float | None]]:
    """{prompt_id: one score per sample}, kept in the append-only JSONL `path`: a rerun (also after
    kill -9) scores only the prompts whose samples have no score yet; `batch_size` prompts per call."""
    from tqdm.auto import tqdm

    answers = {p["prompt_id"]: [s["output"] for s in samples[p["prompt_id"]]] for p in prompts}
    keys = {p["prompt_id"]: _samples_key(p["prompt"], answers[p["prompt_id"]]) for p in prompts}
    done = resume_rows(path, fingerprint(config), keys, id_field="prompt_id", changed="the reward model changed")
    todo = [p for p in prompts if p["prompt_id"] not in done]
    if todo:
        model = load_reward_model(config)
        size = config.batch_size
        for start in tqdm(range(0, len(todo), size), desc=f"scoring {Path(path).stem} ({config.name})"):
            batch = todo[start: start + size]
            scores = model.score([p["prompt"] for p in batch], [answers[p["prompt_id"]] for p in batch])
            rows = [{"prompt_id": p["prompt_id"], "key": keys[p["prompt_id"]], "scores": s}
                    for p, s in zip(batch, scores)]
            append_jsonl(path, rows)
            done.update((row["prompt_id"], row) for row in rows)
    return {p["prompt_id"]: done[p["prompt_id"]]["scores"] for p in prompts}
