"""Paired statistics over requests: an arm's lift over control with its standard error, clustered by user.

Both arms play the same requests, so the per-request difference carries the comparison; its
standard error is far below that of two independent means (a request's value is mostly set by
the request, not by the arm). A user sends several requests (about ten in the demo data) and their
differences are correlated, so the standard error is cluster-robust by user rather than treating
requests as independent; many comparisons are read at once, so their stars are Holm-corrected.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054
ALPHA = 0.05


def clustered_se(residuals: np.ndarray, clusters: np.ndarray | None = None) -> float:
    """Cluster-robust standard error of a mean, from residuals around it.

    With ``n`` requests in ``G`` clusters and ``e_g`` the sum of the residuals ``u_i`` of cluster ``g``::

        SE = sqrt( G / (G - 1) * sum_g e_g^2 ) / n

    (the CR1 sandwich of a mean: sum per user, then the spread of the per-user sums). With one request
    per cluster it is the usual ``sd(u) / sqrt(n)``. ``clusters=None`` treats every request as its own
    cluster.

    Args:
        residuals: ``(n,)`` values minus their mean (e.g. ``d - mean(d)``, or ``t - R c`` for a ratio).
        clusters: ``(n,)`` cluster label per request (the user id), or None.
    """
    u = np.asarray(residuals, dtype=float)
    n = len(u)
    if clusters is None:
        sums = u
    else:
        _, label = np.unique(np.asarray(clusters), return_inverse=True)
        sums = np.bincount(label.ravel(), weights=u)
    g = len(sums)
    if g < 2:
        return float("nan")
    return float(math.sqrt(g / (g - 1) * float(np.sum(sums**2))) / n)


def paired_lift(
    treatment: np.ndarray, control: np.ndarray, clusters: np.ndarray | None = None
) -> dict[str, float]:
    """Lift of ``treatment`` over ``control``, paired by request, standard errors clustered by user.

    Args:
        treatment: ``(n,)`` per-request values of the arm.
        control: ``(n,)`` per-request values of control on the same requests.
        clusters: ``(n,)`` the user of each request (None: requests are independent).

    Returns:
        ``control``, ``treatment`` (means), ``diff`` (mean of the paired differences ``d``), ``diff_se``
        (:func:`clustered_se` of ``d - mean(d)``), ``diff_ci95`` (``diff`` +- 1.96 SE), and the relative
        lift ``lift = mean(t) / mean(c) - 1`` with ``lift_se`` by the delta method for a ratio of paired
        means, :func:`clustered_se` of ``t - R c`` divided by ``mean(c)`` with ``R = mean(t) / mean(c)``,
        ``lift_ci95`` and ``p`` (two-sided normal p-value of ``lift / lift_se``). Relative figures are NaN
        when the control mean is 0.
    """
    t, c = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    if t.shape != c.shape or t.ndim != 1 or len(t) < 2:
        raise ValueError(
            f"paired_lift needs two aligned 1-D arrays of >= 2 requests, got {t.shape} and {c.shape}"
        )
    if clusters is not None and np.shape(clusters) != t.shape:
        raise ValueError(f"clusters must be aligned with the requests: {np.shape(clusters)} vs {t.shape}")
    d = t - c
    diff = float(d.mean())
    diff_se = clustered_se(d - diff, clusters)
    out = {
        "control": float(c.mean()),
        "treatment": float(t.mean()),
        "diff": diff,
        "diff_se": diff_se,
        "diff_ci95": [diff - Z95 * diff_se, diff + Z95 * diff_se],
    }
    mean_c = c.mean()
    if mean_c == 0:
        nan = float("nan")
        return {**out, "lift": nan, "lift_se": nan, "lift_ci95": [nan, nan], "p": nan}
    ratio = t.mean() / mean_c
    lift_se = clustered_se(t - ratio * c, clusters) / abs(mean_c)
    lift = float(ratio - 1.0)
    return {
        **out,
        "lift": lift,
        "lift_se": lift_se,
        "lift_ci95": [lift - Z95 * lift_se, lift + Z95 * lift_se],
        "p": two_sided_p(lift, lift_se),
    }


def two_sided_p(estimate: float, se: float) -> float:
    """Two-sided normal p-value of ``estimate / se``; an exact 0 with SE 0 (identical arms) gives 1."""
    if not (np.isfinite(estimate) and np.isfinite(se)):
        return float("nan")
    if se == 0:
        return 1.0 if estimate == 0 else 0.0
    return float(math.erfc(abs(estimate / se) / math.sqrt(2.0)))


def holm(p_values: dict[str, float], alpha: float = ALPHA) -> dict[str, bool]:
    """Holm's step-down correction over a family of comparisons: which ones are significant.

    Sorted ascending, ``p_(k)`` (k = 1..m) is rejected while ``p_(k) <= alpha / (m - k + 1)``; the first
    that fails stops the walk. It controls the family-wise error rate at ``alpha`` like Bonferroni and
    rejects at least as much. A NaN p-value counts in ``m`` and is never significant.
    """
    m = len(p_values)
    order = sorted(p_values, key=lambda k: (not np.isfinite(p_values[k]), p_values[k]))
    out = dict.fromkeys(p_values, False)
    for k, name in enumerate(order):
        p = p_values[name]
        if not np.isfinite(p) or p > alpha / (m - k):
            break
        out[name] = True
    return out
