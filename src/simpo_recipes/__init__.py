"""SimPO recipes: configuration, data, objectives, training, pipeline, evaluation."""
