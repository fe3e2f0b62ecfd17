"""The reference model: the cached pass gives the losses and gradients of a live reference, is reused
when model, data and tokenization are unchanged, recomputed when one changes, and resumes chunk by chunk."""
import copy
import logging

import pytest
import torch
from datasets import Dataset
from preference_cases import pairs, perturb_, tiny_llama, trainer_for

from simpo_recipes.data.preprocess import add_mismatched_responses

LENGTHS = ((5, 3, 7), (70, 4, 1), (2, 9, 9), (12, 1, 30), (3, 6, 2))


def dataset(**kwargs) -> Dataset:
    return Dataset.from_list(pairs(lengths=LENGTHS, kl=False, **kwargs))


def cached_step(model, name, tmp_path, data, **config):
    """The cached pass on the starting model, then a moved policy's loss and gradients on every row."""
    trainer = trainer_for(model, name, tmp_path, train_dataset=data, **config)
    perturb_(model)
    model.train()
    loss = trainer.compute_loss(model, trainer.data_collator(list(trainer.train_dataset)))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, trainer


def live_step(model, name, tmp_path, data, **config):
    reference = copy.deepcopy(model)
    trainer = trainer_for(perturb_(model), name, tmp_path, ref_model=reference, train_dataset=data, **config)
    model.train()
    loss = trainer.compute_loss(model, trainer.data_collator(list(trainer.train_dataset)))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, trainer


def assert_same(got, want):
    assert got[0] == pytest.approx(want[0], abs=1e-6)
    assert got[1].keys() == want[1].keys()
    for name, grad in want[1].items():
        torch.testing.assert_close(got[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("name", ["dpo", "kto", "rdpo"])
def test_cached_reference_equals_a_live_reference(name, tmp_path):
    data = dataset()
    if name == "kto":
        data = add_mismatched_responses(data, max_length=256)
    cached = cached_step(tiny_llama(), name, tmp_path / "cached", data)
    live = live_step(tiny_llama(), name, tmp_path / "live", data)
    assert "ref_chosen_logps" in cached[2].train_dataset.column_names
    assert "ref_chosen_logps" not in live[2].train_dataset.column_names and live[2].ref_model is not None
    assert_same(cached, live)


def test_lora_reference_is_the_base_model_with_adapters_disabled(tmp_path):
    from peft import LoraConfig, get_peft_model

    def lora_model():
        model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        torch.manual_seed(3)
        for adapter in (p for n, p in model.named_parameters() if "lora_B" in n):
            torch.nn.init.normal_(adapter, std=0.1)  # the adapters move the policy away from the base model
        return model

    def step(model, **config):
        trainer = trainer_for(model, "dpo", tmp_path / str(len(config)), train_dataset=dataset(), **config)
        model.train()
        loss = trainer.compute_loss(model, trainer.data_collator(list(trainer.train_dataset)))
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    cached = step(lora_model())  # the pass runs the base model: adapters disabled
    trainer = trainer_for(lora_model(), "dpo", tmp_path / "x", train_dataset=dataset())
    reference_sums = torch.tensor(trainer.train_dataset["ref_chosen_logps"])
    base = tiny_llama()
    plain = trainer_for(base, "simpo", tmp_path / "plain")
    sums, _ = plain.scorer(base, plain.data_collator(pairs(lengths=LENGTHS, kl=False)))
    torch.testing.assert_close(reference_sums, sums.chunk(2)[0], atol=1e-5, rtol=1e-5)
    live = step(lora_model(), reference_logps="live")  # live: the same adapters disabled at every step
    assert_same(live, cached)


def test_the_cache_is_reused_and_recomputed_when_data_or_model_change(tmp_path, caplog):
    data = dataset()
    trainer_for(tiny_llama(), "dpo", tmp_path, train_dataset=data)
    [folder] = (tmp_path / "reference_logps").iterdir()
    chunk = next(folder.glob("rows-*.safetensors"))
    written = chunk.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="simpo_recipes"):
        again = trainer_for(tiny_llama(), "dpo", tmp_path, train_dataset=data)
    assert f"reusing {folder}" in caplog.text and chunk.stat().st_mtime_ns == written
    assert again.train_dataset["ref_chosen_logps"] == trainer_for(
        tiny_llama(), "dpo", tmp_path, train_dataset=data).train_dataset["ref_chosen_logps"]
    trainer_for(tiny_llama(), "dpo", tmp_path, train_dataset=dataset(seed=5))  # other tokens: another fingerprint
    assert len(list((tmp_path / "reference_logps").iterdir())) == 2
    model = tiny_llama()
    model.config._name_or_path = "another/model"  # another starting model: another fingerprint
    trainer_for(model, "dpo", tmp_path, train_dataset=data)
    assert len(list((tmp_path / "reference_logps").iterdir())) == 3


def test_a_killed_pass_resumes_at_its_last_whole_chunk(tmp_path, caplog):
    data = dataset()
    whole = trainer_for(tiny_llama(), "dpo", tmp_path, train_dataset=data, reference_chunk_rows=2)
    [folder] = (tmp_path / "reference_logps").iterdir()
    chunks = sorted(folder.glob("rows-*.safetensors"))
    assert [c.name for c in chunks] == ["rows-000000000.safetensors", "rows-000000002.safetensors",
                                        "rows-000000004.safetensors"]
    kept = chunks[0].stat().st_mtime_ns
    chunks[2].unlink()  # killed while scoring the last chunk: its temporary file never became a chunk
    (folder / ".rows-000000004.safetensors.tmp").write_bytes(b"torn")
    with caplog.at_level(logging.INFO, logger="simpo_recipes"):
        resumed = trainer_for(tiny_llama(), "dpo", tmp_path, train_dataset=data, reference_chunk_rows=2)
    assert "1 of 5 rows to score" in caplog.text
    assert chunks[0].stat().st_mtime_ns == kept and chunks[2].exists()
    assert resumed.train_dataset["ref_rejected_logps"] == whole.train_dataset["ref_rejected_logps"]
