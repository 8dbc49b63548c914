"""The values a check produces: its rows, its plan and its verdict; nothing is decided here.

Verdicts (:data:`STATUSES`): ``pass``; ``regressed`` (some row is worse than its tolerance
with a significant test); ``inconclusive`` (no row regressed, but some row is worse than its
tolerance without a significant test: the report says how many seeds would settle it);
``underpowered`` (the smallest attainable p is not below alpha, so the check could never
fail; :func:`~harness.verdict_rule.plan` decides it before anything trains and
:meth:`Plan.refusal` says why and the ways out); ``stale``, ``missing``, ``invalid``
(the reference cannot be used, decided by the caller; ``invalid`` also for undefined
values); ``updated`` (a fixture baseline was rewritten). :attr:`Verdict.failed` says whether a
status fails the test; an inconclusive one fails only under the ``"fail"`` policy, because
under a true null it is common (measured: README, "The gate"), while a regressed one is at
most ``alpha``. How a verdict is decided: :mod:`harness.verdict_rule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

from harness.verdict_power import _seeds_needed

__all__ = ["Row", "Plan", "Verdict", "Status", "STATUSES", "FAILING", "InconclusivePolicy",
           "INCONCLUSIVE_DEFAULT", "RESOLUTION"]

Status = Literal["pass", "regressed", "inconclusive", "underpowered", "stale", "missing",
                 "invalid", "updated"]
STATUSES: tuple[str, ...] = ("pass", "regressed", "inconclusive", "underpowered", "stale",
                             "missing", "invalid", "updated")
FAILING: frozenset[str] = frozenset({"regressed", "underpowered", "stale", "missing", "invalid"})
InconclusivePolicy = Literal["fail", "pass"]
INCONCLUSIVE_DEFAULT: InconclusivePolicy = "pass"
# Baselines store 6 significant digits: differences below this are storage noise, not change.
RESOLUTION = 1e-5


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Row:
    """One tested value: a scalar metric (``layer`` None) or one layer of a per-layer one.

    ``delta = candidate - reference``; ``lo``, ``hi``: its per-row t interval at level ``ci``
    over the seeds (not adjusted); ``p``: one-sided p-value for "candidate worse", max-T
    adjusted over every row of the check; ``mde``: the minimal detectable effect at 80 %
    power (how much worse the candidate must be for the check to flag it four times in five),
    from the reference's seed-to-seed spread.
    """

    metric: str
    layer: int | None
    reference: float
    candidate: float
    delta: float
    lo: float
    hi: float
    p: float
    tolerance: float
    alpha: float
    mde: float
    regressed: bool
    higher_is_better: bool = True
    ci: float = 0.95

    @property
    def worse_by(self) -> float:
        """How much worse the candidate is, in the metric's direction (negative: better)."""
        return -self.delta if self.higher_is_better else self.delta

    @property
    def beyond_tolerance(self) -> bool:
        return self.worse_by > self.tolerance + RESOLUTION

    @property
    def flag(self) -> str:
        if self.regressed:
            return "REGRESSED"
        if self.beyond_tolerance:
            return "worse, n.s."  # beyond tolerance, but the seeds do not show it
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["flag"] = self.flag
        return d


@dataclass(frozen=True)
class Plan:
    """What a check can detect, from the seed keys of both sides (and, for ``mde``, the
    reference's spread), before anything trains.

    ``paired``: whether the test pairs the shared seeds (``reference_index`` /
    ``candidate_index``: the seeds the test uses, in pairing order); ``min_p``: the smallest
    p-value the test can return; ``mde``: per ``(metric, layer)``, the minimal detectable
    effect at 80 % power; ``notes``: seeds left out, seeds that could not be paired.
    """

    paired: bool
    reference_index: tuple[int, ...]
    candidate_index: tuple[int, ...]
    n_reference_seeds: int
    alpha: float
    min_p: float
    n_perm: int = 2000
    mde: Mapping[tuple[str, int | None], float] | None = None
    notes: tuple[str, ...] = ()

    @property
    def n_reference(self) -> int:
        return len(self.reference_index)

    @property
    def n_candidate(self) -> int:
        return len(self.candidate_index)

    @property
    def underpowered(self) -> bool:
        return not self.min_p < self.alpha

    @property
    def design(self) -> str:
        if self.paired:
            return f"paired on {self.n_candidate} seeds: sign-flip test on per-seed differences"
        return (f"unpaired, {self.n_reference} vs {self.n_candidate} seeds: seed-label permutation "
                "test (Welch t)")

    def refusal(self) -> str:
        """Why an underpowered check is refused, and the ways out."""
        if self.n_candidate < 3 or self.n_reference < 3:
            return (f"this check could never fail: {self.design}; seed-level tests need at least "
                    "3 seeds per family")
        out = (f"this check could never fail: {self.design}, the smallest attainable p-value is "
               f"{self.min_p:.3g}, not below alpha {self.alpha:g}")
        paired_need = _seeds_needed(0, paired=True, alpha=self.alpha, n_perm=self.n_perm)
        fresh_need = _seeds_needed(self.n_reference_seeds, paired=False, alpha=self.alpha,
                                   n_perm=self.n_perm)
        ways = []
        if paired_need is not None:
            ways.append(f"give both families at least {paired_need} shared seeds (the reference's "
                        "baseline too: add seeds to it and rewrite it with --seedstab-update-baselines)")
        if fresh_need is not None:
            ways.append(f"or check {fresh_need} fresh candidate seeds unpaired against the "
                        f"reference's {self.n_reference_seeds}")
        return out + ("; " + " ".join(ways) if ways else "")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check. ``reasons``: why it is stale, invalid, missing or
    underpowered; ``notes``: what the reader should know (pairing, reductions, seeds that
    would settle an inconclusive row); ``seeds_to_settle``: for an inconclusive verdict, the
    seed count per family at which the observed effect would be detected at 80 % power."""

    status: Status
    rows: tuple[Row, ...] = ()
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    baseline_path: str | None = None
    written: tuple[str, ...] = ()
    design: str = ""
    seeds_to_settle: int | None = None
    inconclusive_policy: InconclusivePolicy = INCONCLUSIVE_DEFAULT

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        if self.inconclusive_policy not in ("fail", "pass"):
            raise ValueError(f"inconclusive: expected 'fail' or 'pass', got {self.inconclusive_policy!r}")
        for name in ("rows", "reasons", "notes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "written", tuple(str(w) for w in self.written))

    @property
    def failed(self) -> bool:
        """Whether this verdict fails the test (an inconclusive one per its policy)."""
        return self.status in FAILING or (self.status == "inconclusive"
                                          and self.inconclusive_policy == "fail")

    @property
    def regressed_rows(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.regressed)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "failed": self.failed, "rows": [r.to_dict() for r in self.rows],
                "reasons": list(self.reasons), "notes": list(self.notes),
                "baseline_path": self.baseline_path, "written": list(self.written),
                "design": self.design, "seeds_to_settle": self.seeds_to_settle,
                "inconclusive_policy": self.inconclusive_policy}
