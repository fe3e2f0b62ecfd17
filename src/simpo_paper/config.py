"""What `make paper` runs: the task's data, the methods in the paper's Table 4 order, the tuning grid
and rule, the γ sweep, and where everything goes. Defaults are the full run; the test shrinks them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# The paper's Table 4 rows, then its two ablations (names of recipes/tiny.yaml's `methods`).
TABLE4 = ("rrhf", "slic", "dpo", "ipo", "cpo", "kto", "orpo", "rdpo", "simpo")
ABLATIONS = ("simpo-no-ln", "simpo-gamma0")


@dataclass
class PaperConfig:
    recipe: str = field(default="recipes/tiny.yaml", metadata={
        "help": "The demo recipe: its SFT stage, its `methods` (objective + settings) and its decoding."})
    methods: list[str] = field(default_factory=lambda: [*TABLE4, *ABLATIONS], metadata={
        "help": "Methods to compare, in table order; each is tuned by the rule below."})
    learning_rates: list[float] = field(default_factory=lambda: [1e-4, 1e-3], metadata={
        "help": "The tuning rule: every method trains once per learning rate, all else at the recipe's values; the "
                "one with the best validation accuracy is kept (a tie keeps the smaller rate)."})
    gamma_beta_ratios: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0], metadata={
        "help": "SimPO's γ/β sweep, at SimPO's chosen learning rate (β stays the recipe's)."})
    longer_chosen_share: float = field(default=0.5, metadata={
        "help": "Share of sort/reverse pairs whose right answer is the longer one (simpo_demo.task); 0.5: the data "
                "favours neither length, so any drift in length comes from the objective."})
    n_prefs: int = field(default=2000, metadata={"help": "Preference pairs to train on (one epoch)."})
    n_validation: int = field(default=100, metadata={"help": "Held-out prompts the learning rate is chosen on."})
    n_test: int = field(default=200, metadata={"help": "Held-out test prompts (the demo's) every chosen model answers."})
    sft_max_steps: int = field(default=0, metadata={
        "help": "0: the demo's SFT stage as it is; N: stop it after N steps (the test's short run)."})
    efficiency_steps: int = field(default=40, metadata={"help": "Training steps timed per contender (SimPO, DPO)."})
    efficiency_rounds: int = field(default=3, metadata={"help": "Turns each contender takes; the median is kept."})
    seed: int = 42
    data_dir: Path = Path("data/paper")
    output_dir: Path = Path("outputs/paper")
    docs_dir: Path = field(default=Path("docs"), metadata={
        "help": "Where paper_reproduction.md goes; the figures go to <docs_dir>/paper/."})

    def __post_init__(self) -> None:
        from simpo_recipes.errors import ConfigError

        unknown = [m for m in self.methods if m not in (*TABLE4, *ABLATIONS)]
        if unknown or "simpo" not in self.methods:
            raise ConfigError(f"--methods {' '.join(self.methods)}: choose among {', '.join((*TABLE4, *ABLATIONS))}, "
                              "simpo included (the γ sweep and the comparisons are SimPO's)")
        if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
            raise ConfigError(f"--learning_rates {self.learning_rates}: give one or more rates > 0")
        if len(self.gamma_beta_ratios) < 2 or any(g < 0 for g in self.gamma_beta_ratios):
            raise ConfigError(f"--gamma_beta_ratios {self.gamma_beta_ratios}: give two or more values ≥ 0")
        if self.efficiency_steps < 2 or self.efficiency_rounds < 1:
            raise ConfigError(f"--efficiency_steps {self.efficiency_steps} --efficiency_rounds {self.efficiency_rounds}: "
                              "give two or more steps (the first is not timed) and one or more rounds")
        if not 0 <= self.longer_chosen_share <= 1:
            raise ConfigError(f"--longer_chosen_share {self.longer_chosen_share}: must be between 0 and 1")
        self.data_dir, self.output_dir, self.docs_dir = Path(self.data_dir), Path(self.output_dir), Path(self.docs_dir)

    @property
    def figures_dir(self) -> Path:
        return self.docs_dir / "paper"
