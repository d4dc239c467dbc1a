"""Request slices that different uses of one split must not share.

The oracle curves (:mod:`eg_grpo.rl.oracle_curves`) judge whether RL's learned reward and the simulator's truth
move together during training; if their requests were also the ones the run is watched and tuned on (the
held-out SID metrics, :class:`eg_grpo.rl.callbacks.HeldOutSIDMetrics`), a choice made by looking at one would leak
into the other. So the ``sid_eval_split`` is cut by a hash of the request id: bucket
:data:`ORACLE_SLICE_BUCKET` of :data:`ORACLE_SLICE_BUCKETS` (about a tenth of the requests) belongs to the
oracle curves, every other bucket to held-out evaluation. A hash, not a sample, so the slice is the same for
every run, seed and sample size, and a request's slice never depends on what else is in the split.
"""

from __future__ import annotations

import numpy as np

ORACLE_SLICE_BUCKETS = 10
ORACLE_SLICE_BUCKET = 0
_SALT = np.uint64(0x0A5C1E)  # any fixed value: the buckets are a pure function of the request id


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays: a fixed, well-mixed hash (slices here, the arena's
    common random numbers)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def in_oracle_slice(request_ids) -> np.ndarray:
    """``(n,)`` bool: which requests are the oracle curves' (``splitmix64(id ^ salt) % 10 == 0``)."""
    ids = np.asarray(request_ids).astype(np.uint64)
    return (splitmix64(ids ^ _SALT) % np.uint64(ORACLE_SLICE_BUCKETS)) == np.uint64(ORACLE_SLICE_BUCKET)
