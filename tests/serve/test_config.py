"""ServeConfig without Ray: defaults, refused values, and the command line's help."""

from __future__ import annotations

import pytest

from eg_grpo.serve.config import ServeConfig


def _config(**kw) -> ServeConfig:
    return ServeConfig(model_dir="m", sid_dir="s", **kw)


def test_the_queue_defaults_to_one_batch_and_stays_configurable():
    config = _config()
    assert (config.max_batch_size, config.max_ongoing_requests, config.max_queued_requests) == (8, 16, 8)
    assert _config(max_batch_size=4).max_queued_requests == 4
    assert _config(max_queued_requests=64).max_queued_requests == 64
    assert _config(max_queued_requests=-1).max_queued_requests == -1  # unbounded, as Ray spells it
    cli = ServeConfig.from_args(["--model_dir", "m", "--sid_dir", "s", "--max_queued_requests", "3"])
    assert cli.max_queued_requests == 3 and cli.max_ongoing_requests == 16


@pytest.mark.parametrize("value", [0, -2, -64])
def test_a_queue_that_is_neither_positive_nor_unbounded_is_refused(value):
    with pytest.raises(ValueError, match=rf"max_queued_requests must be >= 1 \(or -1 .*\), got {value}"):
        _config(max_queued_requests=value)
    with pytest.raises(ValueError, match="max_queued_requests must be >= 1"):
        ServeConfig.from_args(["--model_dir", "m", "--sid_dir", "s", "--max_queued_requests", str(value)])


def test_help_states_the_sizing_rule(capsys):
    with pytest.raises(SystemExit):
        ServeConfig.from_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "max_queued_requests ~ budget_s * sustained_qps - num_replicas * max_ongoing_requests" in text
    assert "floored at max_batch_size" in text and "answered 503 at once" in text
    assert "the trained model folder (as for RecallChannel)" in text
