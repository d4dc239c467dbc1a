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
