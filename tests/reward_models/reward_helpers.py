"""Helpers shared by the reward tests (importable: conftest puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np


def category_codes(items, cluster_size: int = 3) -> np.ndarray:
    """``(N, 3)``: top category id, leaf id within the top, chunk of ``cluster_size`` within the leaf."""
    tops = sorted({p[0] for p in items["category_path"]})
    leaves = {t: sorted({tuple(p) for p in items["category_path"] if p[0] == t}) for t in tops}
    codes, seen = [], {}
    for path in items["category_path"]:
        path = tuple(path)
        k = seen.get(path, 0)
        seen[path] = k + 1
        codes.append((tops.index(path[0]), leaves[path[0]].index(path), k // cluster_size))
    return np.asarray(codes, dtype=np.int64)


def call(reward, vocab, sids, **columns):
    """Calls ``reward`` the way TRL does, with completions spelled by ``sids`` (token ids)."""
    ids = [vocab.encode(s) if s is not None else [0, 1, 2] for s in sids]
    n = len(ids)
    return reward(prompts=["p"] * n, completions=["garbage"] * n, completion_ids=ids, **columns)
