"""Preference objectives: one module per family, each class owning its formula, hyperparameters and rewards.

`OBJECTIVES` maps the config value `objective: <name>` to its class; every class takes per-sequence
log-prob sums and counts (`PairLogps`) and returns its loss and rewards (`ObjectiveOutput`).
"""
from simpo_recipes.objectives.base import Objective, ObjectiveOutput, PairLogps
from simpo_recipes.objectives.cpo import CPO, ORPO
from simpo_recipes.objectives.dpo import DPO, IPO, LNDPO, RDPO
from simpo_recipes.objectives.kto import KTO
from simpo_recipes.objectives.ranking import RRHF, SLiCHF
from simpo_recipes.objectives.simper import SimPER
from simpo_recipes.objectives.simpo import AlphaPO, SimPO

# In the order of the paper's Table 4, then SimPO's successors.
OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (
    RRHF, SLiCHF, DPO, IPO, CPO, KTO, ORPO, RDPO, SimPO, AlphaPO, SimPER, LNDPO)}

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "PairLogps"]
