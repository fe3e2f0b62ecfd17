#!/usr/bin/env python
"""The familiar name of the preference stage: `python scripts/run_simpo.py training_configs/X-simpo.yaml
[--key=value ...]` runs scripts/run_preference.py (objective simpo unless the config says otherwise)."""
import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("run_preference.py")), run_name="__main__")
