"""SimPO recipes: recipe-driven SFT -> SimPO -> evaluation."""
