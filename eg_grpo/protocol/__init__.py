"""The comparison protocol: every training arm tuned alike on valid, then seeds on test, read once.

docs/protocol.md states the rules (written before the runs); this package runs them from one YAML file
(``recipes/configs/demo/protocol/protocol.yaml``):

1. **tune** (:func:`~eg_grpo.protocol.run.tune`): every arm's grid, the same number of trials per arm,
   on the tuning seed; each trial evaluated on the valid split (HR@10) and played in an arena on a
   seeded sample of valid requests beside the classical stack (real data without a funnel, e.g. Amazon
   Office: no arena, and the metric is the evaluations' ``hr@K``, with each phase's own input folders).
2. **select** (:func:`~eg_grpo.protocol.select.select_all`): per arm, the trial with the most expected
   purchases per request (or the highest ``hr@K``); trials within one clustered standard error of it are ties, which go to the
   higher valid HR@10, then to fewer steps. Written to ``selection.json`` before any test run.
3. **test** (:func:`~eg_grpo.protocol.run.test`): each arm's chosen setting with every test seed,
   evaluated on the test split and played in one arena (all arms and seeds on the same requests).
4. **report** (:func:`~eg_grpo.protocol.report.write_report`): the named comparisons, paired by
   request and averaged over seeds, standard errors clustered by user, Holm over the family.

Every run is a stage folder (:mod:`eg_grpo.pipeline`'s ``run_stage``), so re-running continues where it
stopped and skips what is current.

    python recipes/protocol.py --config recipes/configs/demo/protocol/protocol.yaml            # all four steps
    python recipes/protocol.py --config recipes/configs/demo/protocol/protocol.yaml --step tune

May import: eg_grpo.arena, eg_grpo.eval, eg_grpo.io, eg_grpo.pipeline
"""

from eg_grpo.protocol.config import ProtocolConfig, Trial

__all__ = ["ProtocolConfig", "Trial"]
