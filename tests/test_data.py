"""Loading (local formats, hub names offline) and the drop-and-count rules for bad rows."""
import json
import time

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.data.loading import (
    PREFERENCE_COLUMNS,
    SFT_COLUMNS,
    DataError,
    load_mixture,
)
from simpo_recipes.data.preprocess import prepare_conversations, prepare_preferences

USER = {"role": "user", "content": "Sort 3 1 2."}


def pair(chosen="1 2 3", rejected="3 1 2", prompt="Sort 3 1 2."):
    user = {"role": "user", "content": prompt}
    return {"prompt": prompt, "chosen": [user, {"role": "assistant", "content": chosen}],
            "rejected": [user, {"role": "assistant", "content": rejected}], "score_chosen": 9.0,
            "score_rejected": 2.0}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = build_tiny_model("llama3", tmp_path_factory.mktemp("tok"), ["Sort 3 1 2.", "1 2 3"] * 20,
                            vocab_size=290, hidden_size=16, num_layers=1)
    return AutoTokenizer.from_pretrained(path)


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_local_jsonl_parquet_and_save_to_disk_mix_with_fractions(tmp_path):
    write_jsonl(tmp_path / "a" / "train.jsonl", [pair(chosen=str(i)) for i in range(10)])
    write_jsonl(tmp_path / "a" / "test.jsonl", [pair()] * 3)
    Dataset.from_list([pair(chosen=f"p{i}") for i in range(4)]).to_parquet(str(tmp_path / "b" / "train.parquet"))
    Dataset.from_list([pair()]).to_parquet(str(tmp_path / "b" / "test.parquet"))
    DatasetDict({"train_prefs": Dataset.from_list([pair(chosen="d")] * 6),
                 "test_prefs": Dataset.from_list([pair()] * 2)}).save_to_disk(str(tmp_path / "c"))
    mixed = load_mixture({str(tmp_path / "a"): 0.5, str(tmp_path / "b"): 1.0}, ["train", "test"],
                         PREFERENCE_COLUMNS, seed=0)
    assert len(mixed["train"]) == 5 + 4 and len(mixed["test"]) == 3 + 1  # fractions: train only
    assert mixed["train"].column_names == [*PREFERENCE_COLUMNS, "origin"]
    disk = load_mixture({str(tmp_path / "c"): 0.5}, ["train_prefs", "test_prefs"], PREFERENCE_COLUMNS, seed=0)
    assert len(disk["train"]) == 3 and len(disk["test"]) == 2


def test_hub_name_offline_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DataError, match=r"HuggingFaceH4/ultrafeedback_binarized.*not a local folder"):
        load_mixture({"HuggingFaceH4/ultrafeedback_binarized": 1.0}, ["train_prefs"], PREFERENCE_COLUMNS, 0)
    assert time.monotonic() - start < 30


def test_missing_column_and_missing_split_name_the_source(tmp_path):
    write_jsonl(tmp_path / "d" / "train.jsonl", [{"prompt": "x", "chosen": "y"}])
    with pytest.raises(DataError, match=r"d \[train\]: missing column\(s\) \['rejected'\]"):
        load_mixture({str(tmp_path / "d"): 1.0}, ["train"], PREFERENCE_COLUMNS, 0)
    with pytest.raises(DataError, match=r"no file for split 'test'.*found train\.jsonl"):
        load_mixture({str(tmp_path / "d"): 1.0}, ["test"], SFT_COLUMNS, 0)


BAD_ROWS = {
    "missing value": {**pair(), "chosen": None},
    "empty response": pair(rejected="   "),
    "chosen == rejected": pair(rejected="1 2 3"),
    "bad role order": {**pair(), "chosen": [{"role": "assistant", "content": "a"}, {"role": "assistant",
                                                                                      "content": "b"}],
                       "rejected": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "c"}]},
    "prompts differ": {**pair(), "rejected": [{"role": "user", "content": "other"},
                                              {"role": "assistant", "content": "x"}]},
    "longer than max_length": pair(rejected="1 2 3 " * 40),
}


def test_bad_rows_are_dropped_counted_and_summarised(tokenizer, caplog):
    rows = [pair()] * 30 + list(BAD_ROWS.values())
    kept = prepare_preferences(Dataset.from_list(rows), tokenizer, 64, 48, max_bad_fraction=0.2, name="train")
    assert len(kept) == 30 and set(kept.column_names) == {"prompt_input_ids", "chosen_input_ids",
                                                           "rejected_input_ids"}
    for reason in BAD_ROWS:
        assert f"dropped      1 (2.78%): {reason}" in caplog.text


def test_too_many_bad_rows_stop_the_run_with_examples(tokenizer):
    rows = [pair()] * 10 + [pair(rejected="")] * 2
    with pytest.raises(DataError, match=r"(?s)2 malformed rows exceed max_bad_fraction = 0.1.*row 10 \(empty"):
        prepare_preferences(Dataset.from_list(rows), tokenizer, 64, 48, max_bad_fraction=0.1, name="train")


def test_over_length_rows_are_counted_but_not_malformed(tokenizer):
    rows = [pair()] * 5 + [pair(chosen="1 2 3 " * 40)] * 5
    assert len(prepare_preferences(Dataset.from_list(rows), tokenizer, 64, 48, 0.0, "train")) == 5
    with pytest.raises(DataError, match="no row is left"):
        prepare_preferences(Dataset.from_list(rows[5:]), tokenizer, 64, 48, 1.0, "train")


def test_schemas_agree(tokenizer):
    """UltraFeedback (prompt str + full conversations), on-policy sets (same), and plain strings."""
    strings = {"prompt": "Sort 3 1 2.", "chosen": "1 2 3", "rejected": "3 1 2"}
    a = prepare_preferences(Dataset.from_list([pair()]), tokenizer, 64, 48, 0.0, "a")[0]
    b = prepare_preferences(Dataset.from_list([strings]), tokenizer, 64, 48, 0.0, "b")[0]
    assert a == b


def test_sft_rows_checked_the_same_way(tokenizer, caplog, tmp_path):
    good = {"messages": [USER, {"role": "assistant", "content": "1 2 3"}]}
    # UltraChat's extra columns are not carried into the SFT data
    write_jsonl(tmp_path / "chat" / "train.jsonl", [good | {"prompt": "Sort 3 1 2.", "prompt_id": "0"}] * 3)
    loaded = load_mixture({str(tmp_path / "chat"): 1.0}, ["train"], SFT_COLUMNS, seed=0)["train"]
    assert loaded.column_names == ["messages", "origin"] and loaded[0]["messages"] == good["messages"]
    bad = [{"messages": [USER]}, {"messages": [{"role": "assistant", "content": "x"}]},
           {"messages": [USER, {"role": "assistant", "content": ""}]}, {"messages": None}]
    kept = prepare_conversations(Dataset.from_list([good] * 20 + bad), tokenizer, 64, 0.2, "sft")
    assert len(kept) == 20 and sum(kept[0]["assistant_masks"]) == len(tokenizer("1 2 3").input_ids) + 1
    assert "bad role order" in caplog.text and "empty response" in caplog.text


def test_json_content_is_text_and_examples_name_the_file_line(tokenizer, tmp_path):
    """One row in the OpenAI list-of-parts format must not turn the other rows' digit-only answers
    into integers (and drop them); a bad row is shown by its own line in the file."""
    rows = [pair(chosen=str(i), rejected="no") for i in range(10)]
    rows[3]["chosen"][1]["content"] = [{"type": "text", "text": "3"}]
    rows[7]["rejected"] = rows[7]["chosen"]  # line 8: chosen == rejected
    write_jsonl(tmp_path / "d" / "train.jsonl", rows)
    train = load_mixture({str(tmp_path / "d"): 1.0}, ["train"], PREFERENCE_COLUMNS, seed=0)["train"]
    answers = sorted(r["chosen"][1]["content"] for r in train)
    assert answers == [str(i) for i in range(10)]
    kept = prepare_preferences(train, tokenizer, 64, 48, max_bad_fraction=0.1, name="train")
    assert len(kept) == 9
    with pytest.raises(DataError, match=r"train\.jsonl:8 \(chosen == rejected\)"):
        prepare_preferences(train, tokenizer, 64, 48, max_bad_fraction=0.0, name="train")


@pytest.mark.parametrize("line, message", [
    ('{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}',
     r"train\.jsonl:2: messages\[0\]: content has parts of type \['image_url'\]; only text"),
    ('{"messages": [{"role": "user", "content": "hi"}', r"train\.jsonl line 2: not valid JSON"),
    ('[1, 2]', r"train\.jsonl:2: a row must be a JSON object"),
])
def test_json_rows_that_cannot_be_text_are_named_by_line(tmp_path, line, message):
    good = json.dumps({"messages": [USER, {"role": "assistant", "content": "1 2 3"}]})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text(f"{good}\n{line}\n{good}\n")
    with pytest.raises(DataError, match=message):
        load_mixture({str(tmp_path / "d"): 1.0}, ["train"], SFT_COLUMNS, seed=0)


def test_empty_data_file_is_a_clear_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"train\.jsonl: no rows"):
        load_mixture({str(tmp_path / "d"): 1.0}, ["train"], SFT_COLUMNS, seed=0)
