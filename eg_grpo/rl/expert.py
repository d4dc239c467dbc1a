"""Expert splicing for EG-GRPO, as small pure functions the trainer calls per rollout group.

A rollout group is the `G` consecutive rows that share one prompt. Experts are the request's logged
ground-truth SIDs as token-id lists ending with the end token (a dataset column, never re-tokenised
text). They replace the *last* slots of a group: under beam rollouts those hold the lowest-ranked
beams; under sampling all slots are exchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

TokenIds = list[int]


def experts_for_step(schedule: str, k: int, step: int, decay_steps: int) -> int:
    """How many experts each group may receive at optimizer step ``step``.

    ``"decay"`` falls linearly from ``k`` at step 0 to 0 at ``decay_steps`` (rounded up, so a run
    with ``k > 0`` starts with the full ``k``). ``"always"`` and ``"no_positive"`` keep ``k``
    (the latter filters groups later, once their samples are known).
    """
    if schedule == "decay":
        return math.ceil(k * max(0.0, 1.0 - step / decay_steps))
    return k


def strip_after_eos(ids: Sequence[int], eos_token_id: int) -> tuple[int, ...]:
    """The completion up to and including its first end token: the key two completions are compared by."""
    ids = list(ids)
    return tuple(ids[: ids.index(eos_token_id) + 1]) if eos_token_id in ids else tuple(ids)


@dataclass
class GroupSplice:
    """What happened to one group: which rows became experts, and what was skipped."""

    expert_rows: list[int] = field(default_factory=list)  # row indices within the group
    duplicates: int = 0  # candidate experts skipped because the policy had sampled the same SID
    had_positive: bool = False  # some policy sample already equals a logged SID


def splice_group(
    completions: list[TokenIds],
    candidates: Sequence[TokenIds],
    k: int,
    eos_token_id: int,
    only_without_positive: bool = False,
) -> GroupSplice:
    """Replaces up to ``k`` of the group's last completions, in place, by distinct expert SIDs.

    Args:
        completions: the group's `G` sampled completions (token ids); modified in place.
        candidates: the request's expert SIDs in priority order, each ending with the end token.
        k: the number of expert slots (the last ``k`` rows of the group).
        eos_token_id: the end token, to compare completions up to it.
        only_without_positive: leave the group untouched when a policy sample already hits a candidate.

    Returns:
        A [`GroupSplice`]. An expert equal to a SID the policy sampled in a non-expert slot is skipped
        (it would double that SID's weight in the group baseline) and counted in ``duplicates``; the
        next candidate is tried. A slot with no candidate left keeps its policy sample.
    """
    G = len(completions)
    if k <= 0 or not candidates:
        return GroupSplice()
    if k >= G:
        raise ValueError(f"k={k} experts leave no policy sample in a group of {G}")
    for cand in candidates:
        if not cand or cand[-1] != eos_token_id:
            raise ValueError(f"expert completion {list(cand)} must end with the end token {eos_token_id}")
    keys = [strip_after_eos(c, eos_token_id) for c in completions]
    candidate_keys = {tuple(c) for c in candidates}
    result = GroupSplice(had_positive=any(key in candidate_keys for key in keys))
    if only_without_positive and result.had_positive:
        return result
    kept = set(keys[: G - k])  # policy samples that stay in the group
    chosen: list[TokenIds] = []
    for cand in candidates:
        if len(chosen) == k:
            break
        key = tuple(cand)
        if key in kept:
            result.duplicates += 1
            continue
        if any(tuple(c) == key for c in chosen):
            continue  # the log holds the same SID twice (two items of one cluster)
        chosen.append(list(cand))
    for j, expert in enumerate(chosen):
        row = G - k + j
        completions[row] = expert
        result.expert_rows.append(row)
    return result
