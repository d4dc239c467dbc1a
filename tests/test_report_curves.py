"""The RL curves figure (eg_grpo.report.curves_figure, also behind recipes/compare.py): every panel has
a y-axis label, and two runs with identical curves both stay visible."""

import json

import matplotlib.pyplot as plt
from matplotlib.colors import to_rgba

from eg_grpo.report import curves_figure, plot_curves


def _run(path, rewards):
    path.mkdir()
    history = [
        {"step": s, "reward": r, "rewards/sid_match/mean": r, "eg/hit_rate_sampled": 0.1, "valid/hr@10": 0.2}
        for s, r in enumerate(rewards, start=1)
    ]
    (path / "log_history.json").write_text(json.dumps(history))
    return path


def test_every_panel_has_a_y_label_and_identical_runs_stay_visible(tmp_path):
    same = [0.1, 0.2, 0.3, 0.25]
    fig = curves_figure([_run(tmp_path / "vanilla_grpo", same), _run(tmp_path / "eg_grpo", same)])
    drawn = [ax for ax in fig.axes if ax.axison and ax.lines]
    assert {ax.get_title() for ax in drawn} >= {
        "reward of policy samples (weighted sum)",
        "reward: sid_match",
        "valid-split HR@10",
    }
    assert all(ax.get_ylabel() for ax in fig.axes if ax.axison)
    for ax in drawn:
        first, second = ax.lines
        assert list(first.get_ydata()) == list(second.get_ydata())  # the same curve twice ...
        # ... drawn so the second cannot hide the first: another style and marker, thinner, translucent
        assert first.get_linestyle() != second.get_linestyle() and first.get_marker() != second.get_marker()
        assert (
            first.get_linewidth() > second.get_linewidth()
            and to_rgba(second.get_color(), second.get_alpha())[3] < 1
        )
    plt.close(fig)
    assert plot_curves([tmp_path / "vanilla_grpo"], tmp_path / "out" / "curves.png").stat().st_size > 0


def test_the_reward_hacking_figure_is_a_readable_grid_starting_at_the_sft_point(tmp_path):
    from eg_grpo.report import plot_reward_hacking, reward_hacking_figure

    def run(path, sft_point: bool):
        path.mkdir()
        keys = (
            "eg/learned_reward",
            "eg/oracle_gmv_lift",
            "eg/oracle_purchases_lift",
            "eg/oracle_clicks_lift",
        )
        history = [{"step": s, "reward": 0.1 * s, "eg/reward_sampled": 0.1 * s, **dict.fromkeys(keys, 0.01 * s)}
                   for s in (2, 4, 6)]  # fmt: skip
        if sft_point:  # the starting (SFT) model evaluated before the first update
            history.insert(0, {"step": 0, **dict.fromkeys(keys, 0.0)})
        (path / "log_history.json").write_text(json.dumps(history))
        return path

    runs = [run(tmp_path / "with_sft", True), run(tmp_path / "without", False)]
    fig = reward_hacking_figure(runs)
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(drawn) == 5 and len({ax.get_position().y0 for ax in drawn}) > 1  # more than one row
    gmv = next(ax for ax in drawn if ax.get_title().startswith("oracle GMV"))
    lines = {line.get_label(): line for line in gmv.lines if not line.get_label().startswith("_")}
    assert list(lines["with_sft"].get_xdata()) == [0, 2, 4, 6] and list(lines["without"].get_xdata()) == [
        2,
        4,
        6,
    ]
    assert gmv.get_xlim()[0] == 0  # the axis starts at the SFT start either way
    plt.close(fig)
    width, height = plt.imread(plot_reward_hacking(runs, tmp_path / "hacking.png")).shape[1::-1]
    assert width <= 2000 and height >= 600 and width / height < 3, (width, height)
