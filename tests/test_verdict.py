"""Tests for harness.verdict, the gate policy: tolerance AND one max-T seed-level test over
every row of a check, paired when seeds are shared; INCONCLUSIVE, UNDERPOWERED, INVALID;
power (smallest attainable p, MDE, seeds needed); the report. No pytest plugin involved."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.results import Measurement
from harness.stats import holm, paired_difference_per_seed, seeds_needed
from harness.verdict import (FAILING, RESOLUTION, STATUSES, Row, Verdict, check_parameters,
                             decide, min_attainable_p, plan)
from harness.verdict_report import format_report


def keys(seeds) -> list[str]:
    return [f"init{s}-data{s}" for s in seeds]


def per_layer(seeds, *, shift: float = 0.0, sd: float = 0.01, L: int = 2, higher: bool = True,
              name: str = "m", common: np.ndarray | None = None) -> Measurement:
    """Per-seed values [M, L]; ``common`` [M, L] adds a seed effect shared with another family
    (pairing), drawn per seed."""
    ps = np.stack([0.8 + sd * np.random.default_rng(1000 + s).standard_normal(L) for s in seeds])
    if common is not None:
        ps = ps + common
    ps = ps + shift
    v = ps.mean(0)
    return Measurement(name, v, v - 0.01, v + 0.01, higher, per_seed=ps, n_seeds=len(seeds))


def pairwise(seeds, *, shift: float = 0.0, L: int = 2, sd: float = 0.02, name: str = "pw",
             seed: int = 0) -> Measurement:
    """A symmetric pairwise seed matrix [M, M, L] with per-seed effects (a U-statistic)."""
    M = len(seeds)
    r = np.random.default_rng(seed)
    eff = r.standard_normal((M, L)) * sd
    x = 0.7 + shift + (eff[:, None] + eff[None, :]) / 2 + r.standard_normal((M, M, L)) * sd / 4
    x = (x + x.transpose(1, 0, 2)) / 2
    x[np.arange(M), np.arange(M)] = np.nan
    v = np.nanmean(x.reshape(M * M, L), axis=0)
    return Measurement(name, v, v, v, True, pairwise=x, n_seeds=M)


def gen(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


REF, FRESH = range(0, 6), range(100, 106)


def run(ref, cand, *, ref_seeds=REF, cand_seeds=REF, tolerance=0.02, alpha=0.05, **kw) -> Verdict:
    ref = ref if isinstance(ref, dict) else {ref.name: ref}
    cand = cand if isinstance(cand, dict) else {cand.name: cand}
    return decide(ref, cand, metrics=list(ref), tolerance=tolerance, alpha=alpha,
                  reference_keys=keys(ref_seeds), candidate_keys=keys(cand_seeds),
                  generator=gen(), **kw)


# ----------------------------------------------------------------------------- the rule


def test_same_values_pass_with_a_row_per_layer() -> None:
    v = run(per_layer(REF), per_layer(REF))
    assert v.status == "pass" and not v.failed
    assert [r.layer for r in v.rows] == [0, 1]
    for r in v.rows:
        assert r.delta == pytest.approx(0.0) and r.flag == "ok" and r.p == pytest.approx(1.0)
    assert "paired on 6 seeds" in v.design and "max-T adjusted over all 2 rows" in v.design


def test_clear_worsening_regresses() -> None:
    v = run(per_layer(REF), per_layer(REF, shift=-0.1))
    assert v.status == "regressed" and v.failed
    assert all(r.regressed and r.flag == "REGRESSED" for r in v.rows)
    assert all(r.delta == pytest.approx(-0.1) and r.hi < 0 for r in v.rows)
    assert all(r.p == pytest.approx(1 / 64) for r in v.rows)  # 6 paired seeds, exact


def test_one_layer_worse_only_that_row_regresses() -> None:
    cand = per_layer(REF)
    ps = cand.per_seed.copy()
    ps[:, 1] -= 0.1
    cand = Measurement("m", ps.mean(0), cand.lo, cand.hi, True, per_seed=ps)
    v = run(per_layer(REF), cand)
    assert [r.regressed for r in v.rows] == [False, True]


def test_better_candidate_never_regresses() -> None:
    v = run(per_layer(REF), per_layer(REF, shift=+0.2), tolerance=0.0, alpha=0.5)
    assert v.status == "pass" and all(r.p > 0.5 for r in v.rows)


def test_within_tolerance_even_if_significant() -> None:
    v = run(per_layer(REF), per_layer(REF, shift=-0.01), tolerance=0.02)
    assert all(r.p < 0.05 for r in v.rows)  # the seeds do show it ...
    assert v.status == "pass"  # ... but it is within tolerance


def test_worse_but_not_significant_is_inconclusive_and_says_how_many_seeds() -> None:
    ref = per_layer(REF, sd=0.2, L=1)
    ps = ref.per_seed[::-1] - 0.1  # the same spread, 0.1 worse, on other seeds
    cand = Measurement("m", ps.mean(0), ref.lo, ref.hi, True, per_seed=ps)
    v = run(ref, cand, cand_seeds=FRESH, tolerance=0.01)
    (r,) = v.rows
    assert r.beyond_tolerance and not r.regressed and r.flag == "worse, n.s."
    assert v.status == "inconclusive" and not v.failed  # reported; the default policy passes it
    assert v.seeds_to_settle is not None and v.seeds_to_settle > 6
    assert any("seeds per family would detect it" in n for n in v.notes)
    assert r.delta == pytest.approx(-0.1) and r.p > 0.05
    strict = run(ref, cand, cand_seeds=FRESH, tolerance=0.01, inconclusive="fail")
    assert strict.status == "inconclusive" and strict.failed


@pytest.mark.parametrize("shift, status", [(+0.1, "regressed"), (-0.1, "pass")])
def test_lower_is_better_direction(shift: float, status: str) -> None:
    v = run(per_layer(REF, higher=False), per_layer(REF, shift=shift, higher=False))
    assert v.status == status
    assert all(r.worse_by == pytest.approx(shift) for r in v.rows)


def test_pairwise_metric_units_are_pseudo_values_and_means_are_family_means() -> None:
    ref, cand = pairwise(REF), pairwise(REF, shift=-0.1, seed=1)
    v = run(ref, cand)
    assert v.status == "regressed"
    for r, fr, fc in zip(v.rows, ref.value, cand.value):
        assert r.reference == pytest.approx(fr) and r.candidate == pytest.approx(fc)


# ----------------------------------------------------------------------------- error control


def test_max_t_over_every_row_keeps_the_smallest_p_where_holm_cannot() -> None:
    # 4 metrics x 2 layers, 6 paired seeds, every row clearly worse
    ref = {f"m{i}": per_layer(REF, name=f"m{i}") for i in range(4)}
    cand = {f"m{i}": per_layer(REF, name=f"m{i}", shift=-0.1) for i in range(4)}
    v = run(ref, cand)
    assert v.status == "regressed" and all(r.p == pytest.approx(1 / 64) for r in v.rows)
    # Holm over the same 8 rows could never get below 8/64 = 0.125
    raw = [paired_difference_per_seed(ref[m].per_seed, cand[m].per_seed, alternative="less",
                                      generator=gen()).p_value for m in ref]
    assert holm(np.concatenate(raw)).min() == pytest.approx(8 / 64)


def test_false_alarm_rate_per_check_is_at_most_alpha() -> None:
    """Null families (same distribution, fresh seeds, pairwise metrics with seed effects),
    4 metrics x 2 layers, a smoke-like tolerance: the share of checks that *fail* under the
    default policy stays <= alpha. (Inconclusive ones are common here and are counted too.)"""
    failed, inconclusive, n = 0, 0, 300
    for i in range(n):
        ref = {f"pw{j}": pairwise(REF, name=f"pw{j}", seed=10 * i + j) for j in range(4)}
        cand = {f"pw{j}": pairwise(FRESH, name=f"pw{j}", seed=10_000 + 10 * i + j) for j in range(4)}
        v = decide(ref, cand, metrics=list(ref), tolerance=0.01, alpha=0.05, reference_keys=keys(REF),
                   candidate_keys=keys(FRESH), generator=gen(i))
        failed += v.failed
        inconclusive += v.status == "inconclusive"
    # binomial: P(X > 24 | n=300, p=0.05) ~ 0.05; the test is conservative in practice
    assert failed / n <= 0.08, failed
    assert inconclusive > failed  # why inconclusive does not fail by default


def test_identical_values_pass_even_at_tolerance_zero() -> None:
    """Stored baselines keep 6 significant digits: rounding is not a change."""
    ref = pairwise(REF)
    rounded = Measurement(ref.name, ref.value, ref.lo, ref.hi, True,
                          pairwise=np.round(ref.pairwise - 4e-7, 6), n_seeds=6)
    v = run(ref, rounded, tolerance=0.0)
    assert v.status == "pass" and all(abs(r.delta) < RESOLUTION for r in v.rows)


def test_pairing_rules() -> None:
    ref = per_layer(REF)
    assert "paired on 6" in run(ref, per_layer(REF)).design
    assert "unpaired, 6 vs 6" in run(ref, per_layer(FRESH), cand_seeds=FRESH).design
    overlap = [0, 1, 2, 3, 4, 5, 6, 7]
    v = run(ref, per_layer(overlap), cand_seeds=overlap)
    assert "paired on 6" in v.design and any("left out of the test" in n for n in v.notes)
    few = [0, 1, 200, 201, 202, 203]
    v = run(ref, per_layer(few), cand_seeds=few)
    assert "unpaired" in v.design and any("too few to pair" in n for n in v.notes)


def test_pairing_removes_the_shared_seed_effect() -> None:
    common = np.random.default_rng(7).standard_normal((6, 2)) * 0.2  # big seed effect, shared
    ref = per_layer(REF, sd=0.002, common=common)
    cand = per_layer(REF, sd=0.002, common=common, shift=-0.04)
    assert run(ref, cand).status == "regressed"  # paired: the seed effect cancels
    # the same values with the pairing broken: the seed effect swamps the shift
    unpaired = run(ref, cand, cand_seeds=FRESH)
    assert unpaired.status == "inconclusive"


# ----------------------------------------------------------------------------- power


def test_min_attainable_p_and_seeds_needed() -> None:
    assert min_attainable_p(6, 6, paired=True) == pytest.approx(1 / 64)
    assert min_attainable_p(4, 4, paired=True) == pytest.approx(1 / 16)
    assert min_attainable_p(3, 3, paired=False) == pytest.approx(1 / 20)
    assert min_attainable_p(6, 6, paired=False) == pytest.approx(1 / 924)
    assert min_attainable_p(20, 20, paired=True, n_perm=999) == pytest.approx(1 / 1000)
    with pytest.raises(ValueError, match="same seeds"):
        min_attainable_p(4, 5, paired=True)
    assert seeds_needed(4, paired=True, alpha=0.05, alternative="less") == 5
    assert seeds_needed(3, paired=False, alpha=0.05, alternative="less") == 4
    assert seeds_needed(4, paired=True, alpha=0.01, alternative="less") == 7


def test_a_check_that_cannot_fail_is_underpowered_before_and_after() -> None:
    ref = {f"m{i}": per_layer(range(4), name=f"m{i}") for i in range(4)}
    p = plan(ref, metrics=list(ref), reference_keys=keys(range(4)), candidate_keys=keys(range(4)),
             alpha=0.05)
    assert p.underpowered and p.min_p == pytest.approx(1 / 16)
    assert "could never fail" in p.refusal() and "at least 5 shared seeds" in p.refusal()
    assert "or check 3 fresh candidate seeds unpaired against the reference's 4" in p.refusal()
    assert all(math.isinf(x) for x in p.mde.values())
    cand = {k: per_layer(range(4), name=k, shift=-0.5) for k in ref}
    v = run(ref, cand, ref_seeds=range(4), cand_seeds=range(4))
    assert v.status == "underpowered" and v.failed and not v.rows


def test_mde_shrinks_with_seeds_and_bounds_the_tolerance() -> None:
    def mde(m: int) -> float:
        ref = {"m": per_layer(range(m), sd=0.05, L=1)}
        return plan(ref, metrics=["m"], reference_keys=keys(range(m)), candidate_keys=keys(range(m)),
                    alpha=0.05, tolerance=0.03).mde["m", 0]
    assert mde(6) > mde(12) > mde(24) > 0.03  # never below the tolerance


# ----------------------------------------------------------------------------- invalid input


def test_undefined_seed_values_are_invalid_and_named() -> None:
    cand = per_layer(REF)
    ps = cand.per_seed.copy()
    ps[2, 1] = np.nan
    v = run(per_layer(REF), Measurement("m", cand.value, cand.lo, cand.hi, True, per_seed=ps))
    assert v.status == "invalid" and v.failed
    assert "m: the candidate has undefined (NaN) seed values in layer(s) [1]" in v.reasons[0]


def test_missing_metric_direction_and_shapes() -> None:
    v = decide({"m": per_layer(REF)}, {"x": per_layer(REF, name="x")}, metrics=["m"], tolerance=0.1,
               alpha=0.05, reference_keys=keys(REF), candidate_keys=keys(REF), generator=gen())
    assert v.status == "invalid" and "m: not in the candidate" in v.reasons[0]
    v = run(per_layer(REF), per_layer(REF, higher=False))
    assert v.status == "invalid" and "higher_is_better is True in the reference" in v.reasons[0]
    heads = Measurement("m", np.zeros((2, 3)), np.zeros(3), np.zeros(3), True, per_seed=np.zeros((6, 2, 3)))
    assert "reduce per-head values" in run(heads, heads).reasons[0]
    bare = Measurement("m", np.zeros(2), np.zeros(2), np.zeros(2), True)
    assert "keeps no seed-level values" in run(bare, bare).reasons[0]


def test_other_depth_is_compared_on_the_layer_mean_and_said_so() -> None:
    v = run(per_layer(REF, L=2), per_layer(REF, L=4, shift=-0.1))
    assert v.status == "regressed" and len(v.rows) == 1 and v.rows[0].layer is None
    assert any("2 layers and the candidate 4; compared on the mean over layers" in n for n in v.notes)


@pytest.mark.parametrize("kw, match", [
    ({"tolerance": -0.1}, "tolerance: expected a finite number >= 0"),
    ({"tolerance": math.nan}, "tolerance: expected a finite number >= 0"),
    ({"tolerance": True}, "tolerance: expected a finite number >= 0"),
    ({"alpha": 0.0}, "alpha: expected a level strictly between 0 and 1"),
    ({"alpha": 1.0}, "alpha: expected a level strictly between 0 and 1"),
    ({"n_perm": 0}, "n_perm: expected a positive int"),
    ({"inconclusive": "maybe"}, "inconclusive: expected 'fail' or 'pass'"),
])
def test_parameter_errors(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run(per_layer(REF), per_layer(REF), **kw)
    if "inconclusive" not in kw:
        args = {"tolerance": 0.02, "alpha": 0.05, "n_perm": 100, **kw}
        with pytest.raises(ValueError, match=match):
            check_parameters(args["tolerance"], args["alpha"], args["n_perm"])


def test_per_metric_tolerance_with_default() -> None:
    ref = {"a": per_layer(REF, name="a"), "b": per_layer(REF, name="b")}
    cand = {"a": per_layer(REF, name="a", shift=-0.05), "b": per_layer(REF, name="b", shift=-0.05)}
    v = decide(ref, cand, metrics=["a", "b"], tolerance={"a": 0.1, "default": 0.01}, alpha=0.05,
               reference_keys=keys(REF), candidate_keys=keys(REF), generator=gen())
    assert [r.regressed for r in v.rows] == [False, False, True, True]
    with pytest.raises(ValueError, match="no entry for metric 'b'"):
        decide(ref, cand, metrics=["a", "b"], tolerance={"a": 0.1}, alpha=0.05,
               reference_keys=keys(REF), candidate_keys=keys(REF), generator=gen())


def test_deterministic_given_the_generator() -> None:
    many = range(14)  # 2**14 sign patterns: sampled, so the generator decides them
    ref, cand = per_layer(many, sd=0.05), per_layer(range(100, 114), sd=0.05)  # paired by keys below
    a = decide({"m": ref}, {"m": cand}, metrics=["m"], tolerance=0.0, alpha=0.05,
               reference_keys=keys(many), candidate_keys=keys(many), generator=gen(3))
    b = decide({"m": ref}, {"m": cand}, metrics=["m"], tolerance=0.0, alpha=0.05,
               reference_keys=keys(many), candidate_keys=keys(many), generator=gen(3))
    c = decide({"m": ref}, {"m": cand}, metrics=["m"], tolerance=0.0, alpha=0.05,
               reference_keys=keys(many), candidate_keys=keys(many), generator=gen(4))
    assert a == b and [r.p for r in a.rows] != [r.p for r in c.rows]


# ----------------------------------------------------------------------------- verdict, report


def test_every_status_and_whether_it_fails() -> None:
    assert set(STATUSES) == {"pass", "regressed", "inconclusive", "underpowered", "stale",
                             "missing", "invalid", "updated"}
    for s in STATUSES:
        v = Verdict(s)  # type: ignore[arg-type]
        assert v.failed == (s in FAILING)
    assert Verdict("inconclusive", inconclusive_policy="fail").failed
    with pytest.raises(ValueError, match="status: expected one of"):
        Verdict("failed")  # type: ignore[arg-type]


def test_verdict_dict_is_json() -> None:
    v = run(per_layer(REF), per_layer(REF, shift=-0.1))
    d = json.loads(json.dumps(v.to_dict()))
    assert d["status"] == "regressed" and d["failed"] is True
    assert d["rows"][0]["flag"] == "REGRESSED" and d["rows"][0]["layer"] == 0
    assert set(Row.__dataclass_fields__) <= set(d["rows"][0])


def test_report_regressed() -> None:
    v = run(per_layer(REF), per_layer(REF, shift=-0.1))
    text = format_report(v, title="check x", seeds_reference=list(REF), seeds_candidate=list(REF),
                         update_command="pytest s.yaml::x --update-baselines", mlflow_run="0123abcd")
    lines = text.splitlines()
    assert lines[0].startswith("seedstab: REGRESSED: 2 of 2 value(s)") and "[check x]" in lines[0]
    head = next(i for i, ln in enumerate(lines) if ln.startswith("metric"))
    for col in ("layer", "reference", "candidate", "Δ", "CI(Δ)", "p", "MDE", "tolerance", "flag"):
        assert col in lines[head]
    assert " REGRESSED" in lines[head + 2] and "-0.1000" in lines[head + 2]
    assert "paired on 6 seeds" in text and "max-T adjusted over all 2 rows" in text
    assert "seeds (reference): [0, 1, 2, 3, 4, 5]" in text and "MLflow run: 0123abcd" in text
    assert lines[-1].endswith("pytest s.yaml::x --update-baselines")


def test_report_other_statuses() -> None:
    stale = format_report(Verdict("stale", reasons=["fingerprint of family adam changed"]),
                          update_command="<update>")
    assert "STALE baseline (not a regression)" in stale and "REGRESSED" not in stale
    assert "  - fingerprint of family adam changed" in stale and stale.endswith("<update>")
    missing = format_report(Verdict("missing", written=["x.obtained.json"]))
    assert "MISSING baseline" in missing and "written:\n  x.obtained.json" in missing
    under = format_report(Verdict("underpowered", reasons=["could never fail"]))
    assert "UNDERPOWERED" in under and "could never fail" in under
    assert "UPDATED" in format_report(Verdict("updated"), update_command="<u>")
    assert "<u>" not in format_report(Verdict("updated"), update_command="<u>")
    passed = format_report(run(per_layer(REF), per_layer(REF)))
    assert passed.startswith("seedstab: PASS") and "reference" in passed
