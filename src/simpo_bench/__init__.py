"""The training-step benchmark (`make bench`): contenders and report."""
