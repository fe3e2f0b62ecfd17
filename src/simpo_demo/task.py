"""Synthetic, programmatically judged task family for the CPU demo (`make demo`).

Three task types over 3-5 digits, with fixed-format answers (digits joined by single spaces) and
instructions phrased in three variants each: ``sort`` ascending, duplicates kept (``3 1 3`` ->
``1 3 3``); ``max`` (``3 1 7`` -> ``7``); ``reverse`` (``3 1 7`` -> ``7 1 3``).

The SFT data is deliberately imperfect: each task has one systematic, plausible error mode, shown
by most SFT answers where it applies, so an SFT model reproduces it under greedy decoding:

- ``sort`` with a repeated digit: the duplicates are dropped, ``1 3`` (SHORTER than right);
- ``max``: the right digit, then chatter: ``7 Hope this helps!`` (LONGER);
- ``reverse``: the right answer, then ``Done.`` (LONGER).

Preference pairs: ``chosen`` is right, ``rejected`` shows the task's error mode; for sorts without a
repeated digit (no error mode) it has a spurious duplicate (LONGER; teaches the model not to
overcorrect) or two adjacent digits swapped. Error modes made of extra *text* tokens are fixed by
SimPO without disturbing the digits; the duplicate modes make the model look at the input.

`make paper` sets the share of pairs whose chosen answer is the LONGER one (`longer_chosen_share`),
so that an objective that rewards length can be seen doing it: each sort or reverse pair gets, with
that probability, a shorter wrong answer (the sort's dropped duplicates, else one digit dropped), and
otherwise a longer one (a spurious duplicate for sorts, chatter for reverses). A max pair always gets
the longer, chattering one: a one-digit answer has no shorter wrong answer.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

from simpo_recipes.files import write_jsonl

TASKS = ("sort", "max", "reverse")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "sort": (
        "Sort these digits in ascending order: {xs}",
        "Put the following digits in increasing order: {xs}",
        "Arrange from smallest to largest: {xs}",
    ),
    "max": (
        "What is the largest digit in: {xs}?",
        "Find the maximum of these digits: {xs}",
        "Which digit is the biggest? {xs}",
    ),
    "reverse": (
        "Reverse this list: {xs}",
        "Write these digits in reverse order: {xs}",
        "Read the list backwards: {xs}",
    ),
}
CHATTER = {"max": "Hope this helps!", "reverse": "Done."}
MIN_LEN, MAX_LEN = 3, 5
# Probability that an SFT answer shows its task's error mode, where the mode applies.
SFT_ERROR_RATE: dict[str, float] = {"sort": 0.7, "max": 0.65, "reverse": 0.65}


def expected_answer(task: str, items: list[int]) -> str:
    """The one correct response to a task over `items`."""
    if task == "sort":
        out = sorted(items)
    elif task == "max":
        out = [max(items)]
    elif task == "reverse":
        out = items[::-1]
    else:
        raise ValueError(f"unknown demo task {task!r}")
    return " ".join(map(str, out))


def error_answer(task: str, items: list[int]) -> str | None:
    """The task's systematic error mode, or None where it does not apply (sort, no duplicate)."""
    if task == "sort":
        return None if len(set(items)) == len(items) else " ".join(map(str, sorted(set(items))))
    return f"{expected_answer(task, items)} {CHATTER[task]}"


def rejected_answer(task: str, items: list[int], rng: random.Random) -> str:
    """A wrong answer for a preference pair: the task's error mode where it applies; for sorts
    without a repeated digit a spurious duplicate (longer) or two adjacent digits swapped."""
    wrong = error_answer(task, items)
    if wrong is not None:
        return wrong
    out = sorted(items)
    if rng.random() < 0.75:
        i = rng.randrange(len(out))
        out.insert(i, out[i])
    else:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(map(str, out))


def length_controlled_rejected(task: str, items: list[int], rng: random.Random, longer_chosen: bool) -> str:
    """A wrong answer shorter than the right one when `longer_chosen` (and the task has one), else longer."""
    right = expected_answer(task, items).split(" ")
    if longer_chosen and task != "max":
        wrong = error_answer(task, items) if task == "sort" else None
        if wrong is None:
            del right[rng.randrange(len(right))]
            wrong = " ".join(right)
        return wrong
    if task == "sort":
        i = rng.randrange(len(right))
        return " ".join(right[:i + 1] + right[i:])
    return f"{' '.join(right)} {CHATTER[task]}"


def parse_prompt(prompt: str) -> dict | None:
    """{"task", "items"} of an instruction written by this module, or None if it is not one."""
    for task, templates in TEMPLATES.items():
        for template in templates:
            head, tail = template.split("{xs}")
            if prompt.startswith(head) and prompt.endswith(tail):
                body = prompt[len(head): len(prompt) - len(tail)].split(" ")
                if all(len(x) == 1 and x.isdigit() for x in body):
                    return {"task": task, "items": [int(x) for x in body]}
    return None


def judge(record: dict, response: str) -> bool:
    """Whether `response` is exactly the correct answer for `record` (a held-out row with task
    and items, or any row whose "prompt" or "instruction" this module wrote)."""
    if "task" not in record:
        record = parse_prompt(record.get("instruction") or record["prompt"]) or {}
        if not record:
            raise ValueError("record has no task/items and its prompt is not a demo instruction")
    return response.strip() == expected_answer(record["task"], list(record["items"]))


def reward(prompt: str, response: str) -> float:
    """The program judge as a reward model (`type: program` in a recipe's onpolicy block): 1 for
    the right answer to a demo instruction, 0 otherwise."""
    return float(judge({"prompt": prompt}, response))


def _prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


def _turns(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


class _Sampler:
    """Draws (task, items, prompt) triples whose prompts never repeat across all splits."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[str] = set()

    def draw(self) -> tuple[str, list[int], str]:
        while True:
            task = self.rng.choice(TASKS)
            items = [self.rng.randrange(10) for _ in range(self.rng.randint(MIN_LEN, MAX_LEN))]
            template = self.rng.choice(TEMPLATES[task])
            prompt = template.format(xs=" ".join(map(str, items)))
            if prompt not in self.seen:
                self.seen.add(prompt)
                return task, items, prompt


def _make_row(kind: str, sampler: _Sampler, longer_chosen_share: float | None = None) -> dict:
    """One row of a split: kind is "sft", "prefs" or "heldout"; `longer_chosen_share` (prefs): the
    length-controlled rejected answers of `make paper` instead of the task's error modes."""
    task, items, prompt = sampler.draw()
    rng, right, pid = sampler.rng, expected_answer(task, items), _prompt_id(prompt)
    if kind == "heldout":
        return {"prompt_id": pid, "instruction": prompt, "task": task, "items": items, "answer": right}
    if kind == "sft":
        wrong = error_answer(task, items)
        answer = wrong if wrong is not None and rng.random() < SFT_ERROR_RATE[task] else right
        return {"prompt": prompt, "prompt_id": pid, "messages": _turns(prompt, answer)}
    wrong = (rejected_answer(task, items, rng) if longer_chosen_share is None else
             length_controlled_rejected(task, items, rng, rng.random() < longer_chosen_share))
    return {"prompt": prompt, "prompt_id": pid, "chosen": _turns(prompt, right), "rejected": _turns(prompt, wrong),
            "score_chosen": float(rng.choice([8, 9, 10])), "score_rejected": float(rng.choice([2, 3, 4, 5]))}


def write_demo_data(
    out_dir: str | Path,
    n_sft: int = 4000,
    n_prefs: int = 4000,
    n_heldout: int = 200,
    n_test: int = 200,
    seed: int = 42,
    n_validation: int = 0,
    longer_chosen_share: float | None = None,
) -> dict[str, Path]:
    """Write the SFT, preference and held-out sets under `out_dir`; returns their paths.

    Layout: ``sft/{train,test}.jsonl`` (UltraChat-200k schema), ``prefs/{train,test}.jsonl``
    (UltraFeedback-binarized schema), ``heldout.jsonl`` and, with `n_validation`, ``validation.jsonl``
    (held-out prompts to tune on, never the test prompts). Deterministic for a seed; no prompt
    appears twice anywhere. `longer_chosen_share` (0 to 1): see the module's docstring; None keeps
    the demo's pairs. It changes only the preference splits: the SFT and held-out sets are the demo's.
    """
    if longer_chosen_share is not None and not 0 <= longer_chosen_share <= 1:
        raise ValueError(f"longer_chosen_share = {longer_chosen_share!r}: must be between 0 and 1")
    out = Path(out_dir)
    sampler = _Sampler(random.Random(seed))
    # Draw order is fixed so that each split is a pure function of the seed and the sizes before it.
    splits = {
        "heldout": ("heldout", n_heldout, out / "heldout.jsonl"),
        "sft_train": ("sft", n_sft, out / "sft" / "train.jsonl"),
        "sft_test": ("sft", n_test, out / "sft" / "test.jsonl"),
        "prefs_train": ("prefs", n_prefs, out / "prefs" / "train.jsonl"),
        "prefs_test": ("prefs", n_test, out / "prefs" / "test.jsonl"),
    }
    if n_validation:
        splits["validation"] = ("heldout", n_validation, out / "validation.jsonl")
    return {name: write_jsonl(path, [_make_row(kind, sampler, longer_chosen_share) for _ in range(n)])
            for name, (kind, n, path) in splits.items()}

