"""Paired statistics over requests: an arm's lift over control with its standard error.

Both arms play the same requests, so the per-request difference carries the comparison; its
standard error is far below that of two independent means (a request's value is mostly set by
the request, not by the arm).
"""

from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054


def paired_lift(treatment: np.ndarray, control: np.ndarray) -> dict[str, float]:
    """Lift of ``treatment`` over ``control``, paired by request.

    Args:
        treatment: ``(n,)`` per-request values of the arm.
        control: ``(n,)`` per-request values of control on the same requests.

    Returns:
        ``control``, ``treatment`` (means), ``diff`` (mean of the paired differences), ``diff_se``
        (their sample standard deviation / sqrt(n)), ``diff_ci95`` (``diff`` +- 1.96 SE), and the
        relative lift ``lift = mean(t) / mean(c) - 1`` with ``lift_se`` by the delta method for a
        ratio of paired means, ``sqrt(var(t - R c) / n) / mean(c)`` with ``R = mean(t) / mean(c)``,
        and ``lift_ci95``. Relative figures are NaN when the control mean is 0.
    """
    t, c = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    if t.shape != c.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(
            f"paired_lift needs two aligned 1-D arrays of >= 2 requests, got {t.shape} and {c.shape}"
        )
    n = len(t)
    d = t - c
    diff, diff_se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n))
    out = {
        "control": float(c.mean()),
        "treatment": float(t.mean()),
        "diff": diff,
        "diff_se": diff_se,
        "diff_ci95": [diff - Z95 * diff_se, diff + Z95 * diff_se],
    }
    mean_c = c.mean()
    if mean_c == 0:
        return {**out, "lift": float("nan"), "lift_se": float("nan"), "lift_ci95": [float("nan")] * 2}
    ratio = t.mean() / mean_c
    lift_se = float(np.std(t - ratio * c, ddof=1) / np.sqrt(n) / abs(mean_c))
    lift = float(ratio - 1.0)
    return {
        **out,
        "lift": lift,
        "lift_se": lift_se,
        "lift_ci95": [lift - Z95 * lift_se, lift + Z95 * lift_se],
    }
