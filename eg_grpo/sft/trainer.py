"""TRL's ``SFTTrainer``, with the LM head scoring only the positions that carry a label on every device.

TRL 1.16's SFT loss runs the backbone, then projects hidden states through the LM head in tiles
(``trl.trainer.utils.add_fused_lm_head``). On CUDA/XPU it projects only the positions whose label is
not ``-100``; on other devices it projects *every* position and masks afterwards, because on Neuron a
varying number of positions would recompile the graph. A CPU has no graph to recompile, and an SID
row's loss sits on its last few tokens (the SID and EOS) while the prompt (history, query) is most of
the row: on the demo the tiled head over every position was ~60 % of an SFT step's time. Here the
head scores the labelled positions only, as TRL does on CUDA, so the loss, its gradient and the logged
entropy / token accuracy are the same (to float summation order) and a CPU step is ~2x faster.
"""

from __future__ import annotations

import contextlib

import torch
import trl.trainer.utils as trl_utils
from trl import SFTTrainer

# The name `add_fused_lm_head`'s forward looks up, on each call, to choose between scoring the labelled
# positions only ("compact") and every position: it must stay a module global of trl.trainer.utils.
_COMPACT_SWITCH = "_use_triton"


def check_compact_switch() -> None:
    """Raises ``RuntimeError`` when the installed TRL no longer has the switch this trainer sets."""
    if not callable(getattr(trl_utils, _COMPACT_SWITCH, None)):
        raise RuntimeError(
            f"trl {trl_utils.__name__}: trl.trainer.utils.{_COMPACT_SWITCH} is gone; eg-grpo's SFT needs trl 1.16.x"
        )


@contextlib.contextmanager
def labelled_positions_only():
    """Within the block, TRL's fused LM head projects only labelled positions, on every device.

    Only the compact/full choice changes: the tile kernel (Triton or torch) is still chosen by
    ``trl.kernels.chunked_logprob``'s own check of the device.
    """
    check_compact_switch()
    original = getattr(trl_utils, _COMPACT_SWITCH)
    setattr(trl_utils, _COMPACT_SWITCH, lambda device: True)
    try:
        yield
    finally:
        setattr(trl_utils, _COMPACT_SWITCH, original)


class SIDSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss projects only the labelled positions through the LM head (see module doc).

    Used by the SFT stage and by the RL stage's continued-SFT control. The forward runs inside
    ``compute_loss``; the backward, outside it, needs no switch (the tile kernel's choice is its own).
    """

    def __init__(self, *args, **kwargs):
        check_compact_switch()
        super().__init__(*args, **kwargs)

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict, return_outputs: bool = False, num_items_in_batch=None
    ):
        with labelled_positions_only():
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
