"""On-policy preference data, the way the paper's Instruct settings built theirs: sample N answers
per prompt from the policy itself, score them with a reward model, keep best vs worst.

Steps, each resumable after kill -9 and keyed by (prompt_id, seed), never by file order:
`prompts` (sorted unique prompts of a dataset split), `sampling` (the evaluation's generation
path, one seed per sample), `reward_models` (score every sample, batched), `binarise` (chosen =
best, rejected = worst; identical, tied and truncated pairs dropped and counted; the released
schema, train and test splits). `pipeline.run` chains them; `scripts/make_onpolicy.py` is the CLI.
"""
