"""Preference objectives: one module per family, each owning its formula, hyperparameters and rewards."""
