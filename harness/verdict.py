"""The gate policy: is the candidate family *worse* than its reference? One import for it.

A check compares a candidate family with a reference family on a set of metrics, one row per
scalar metric or layer; a row regresses when it is worse than its tolerance and one max-T
seed-level test over every row of the check rejects "not worse" at ``alpha``. The policy is
a pure function, in one module per job; this one re-exports them:

- :mod:`harness.verdict_rule`: the rule itself, :func:`plan` (before anything trains) and
  :func:`decide` (the verdict);
- :mod:`harness.verdict_types`: :class:`Row`, :class:`Plan`, :class:`Verdict` and the
  statuses (:data:`STATUSES`, which of them fail: :data:`FAILING`);
- :mod:`harness.verdict_power`: the check's parameters, the smallest attainable p, minimal
  detectable effects and the seeds that would settle an inconclusive row;
- :mod:`harness.verdict_units`: both sides' seed-level units of a metric, and tolerances.

The verdict as text a person reads: :mod:`harness.verdict_report`.
"""

from __future__ import annotations

# POWER is used as ``verdict.POWER`` too, though not in __all__.
from harness.verdict_power import POWER, check_parameters, min_attainable_p
from harness.verdict_rule import decide, plan
from harness.verdict_types import (FAILING, INCONCLUSIVE_DEFAULT, RESOLUTION, STATUSES,
                                   InconclusivePolicy, Plan, Row, Status, Verdict)
from harness.verdict_units import resolve_tolerance

__all__ = ["Row", "Plan", "Verdict", "Status", "STATUSES", "FAILING", "InconclusivePolicy",
           "INCONCLUSIVE_DEFAULT", "RESOLUTION", "check_parameters", "min_attainable_p",
           "plan", "decide", "resolve_tolerance"]
