"""What a run leaves to look at: training_curves.png reads on its own."""
from simpo_recipes.training.reporting import curves_figure


def test_training_curves_read_on_their_own():
    lines = [{"step": 1, "loss": 1.5, "logps/chosen": -1.0, "logps/rejected": -1.25},
             {"step": 2, "loss": 1.25, "logps/chosen": -0.75, "logps/rejected": -1.5},
             {"step": 2, "eval_loss": 1.0, "eval_logps/chosen": -0.5, "eval_logps/rejected": -2.0}]
    fig = curves_figure(lines, "Training curves of outputs/x/simpo")
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert fig.get_suptitle() == "Training curves of outputs/x/simpo"
    assert [ax.get_title() for ax in shown] == ["loss", "mean log-prob per token"]  # only what was logged
    assert all(ax.get_xlabel() == "optimizer step" and ax.get_ylabel() for ax in shown)
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in shown]
    assert legends == [["train (last 1.25)", "eval (last 1)"],
                       ["train chosen (last -0.75)", "eval chosen (last -0.5)", "train rejected (last -1.5)",
                        "eval rejected (last -2)"]]
    assert curves_figure([{"step": 1, "learning_rate": 0.1}], "nothing plottable") is None
