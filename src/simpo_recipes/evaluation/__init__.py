"""Evaluation: generation with the recipe's decoding settings, the harnesses' answer formats, the
pinned harnesses themselves (AlpacaEval 2, Arena-Hard v0.1, MT-Bench) with a configurable judge,
and the results table."""
