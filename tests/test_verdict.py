"""Tests for harness.verdict: the regression rule (tolerance AND one-sided seed test, Holm
across layers), its direction, its errors, and the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from harness.results import Measurement
from harness.stats import holm, permutation_difference
from harness.verdict import (Row, Verdict, check_parameters, compare, format_report,
                             min_attainable_p, power_note)


def per_layer(seeds: range, *, shift: float = 0.0, sd: float = 0.01, L: int = 4,
              higher: bool = True, name: str = "head_stability") -> Measurement:
    ps = np.stack([0.8 + sd * np.random.default_rng(s).standard_normal(L) for s in seeds])
    ps = ps + shift  # (M, L)
    v = ps.mean(0)
    return Measurement(name, v, v - 0.01, v + 0.01, higher, per_seed=ps, n_seeds=len(seeds))


def pairwise(seeds: range, *, shift: float = 0.0, higher: bool = True) -> Measurement:
    M = len(seeds)
    x = np.random.default_rng(seeds[0]).standard_normal((M, M)) * 0.01
    pw = 0.9 + (x + x.T) / 2 + shift  # (M, M)
    pw[np.arange(M), np.arange(M)] = np.nan
    f = np.asarray(np.nanmean(pw))
    return Measurement("resid_cka", f, f, f, higher, pairwise=pw, n_seeds=M)


def gen(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


BASE = range(0, 6)
CAND = range(100, 106)


def test_same_distribution_passes_with_a_row_per_layer() -> None:
    rows = compare(per_layer(BASE), per_layer(CAND), tolerance=0.02, alpha=0.05, generator=gen())
    assert [r.layer for r in rows] == [0, 1, 2, 3]
    assert not any(r.regressed for r in rows)
    for r in rows:
        assert r.delta == pytest.approx(r.obtained - r.baseline)
        assert r.lo <= r.delta <= r.hi and 0 < r.p <= 1 and r.flag == "ok"
        assert (r.metric, r.tolerance, r.alpha) == ("head_stability", 0.02, 0.05)


def test_clear_worsening_regresses() -> None:
    rows = compare(per_layer(BASE), per_layer(CAND, shift=-0.1), tolerance=0.02, alpha=0.05,
                   generator=gen())
    assert all(r.regressed and r.flag == "REGRESSED" for r in rows)
    assert all(r.delta == pytest.approx(-0.1, abs=0.02) and r.hi < 0 for r in rows)


def test_one_layer_worse_only_that_layer_regresses() -> None:
    cand = per_layer(CAND)
    ps = cand.per_seed.copy()
    ps[:, 2] -= 0.1
    cand = Measurement(cand.name, ps.mean(0), cand.lo, cand.hi, True, per_seed=ps)
    rows = compare(per_layer(BASE), cand, tolerance=0.02, alpha=0.05, generator=gen())
    assert [r.regressed for r in rows] == [False, False, True, False]


def test_better_candidate_never_regresses() -> None:
    rows = compare(per_layer(BASE), per_layer(CAND, shift=+0.2), tolerance=0.0, alpha=0.5,
                   generator=gen())
    assert not any(r.regressed for r in rows)
    assert all(r.p > 0.5 for r in rows)  # one-sided: "better" is far from the rejection tail


def test_within_tolerance_even_if_significant() -> None:
    rows = compare(per_layer(BASE, sd=0.001), per_layer(CAND, sd=0.001, shift=-0.01),
                   tolerance=0.02, alpha=0.05, generator=gen())
    assert all(r.p < 0.05 for r in rows)  # the seeds do show it ...
    assert not any(r.regressed for r in rows)  # ... but it is within tolerance


def test_beyond_tolerance_but_not_significant() -> None:
    # 3 vs 3 seeds with large spread: the shift exceeds the tolerance, the test cannot reject
    rows = compare(per_layer(range(3), sd=0.2, L=1), per_layer(range(50, 53), sd=0.2, L=1,
                                                              shift=-0.05),
                   tolerance=0.01, alpha=0.05, generator=gen())
    (r,) = rows
    assert r.beyond_tolerance and not r.regressed and r.flag == "worse, n.s."


@pytest.mark.parametrize("shift, regressed", [(+0.1, True), (-0.1, False)])
def test_lower_is_better_direction(shift: float, regressed: bool) -> None:
    rows = compare(per_layer(BASE, higher=False), per_layer(CAND, shift=shift, higher=False),
                   tolerance=0.02, alpha=0.05, generator=gen())
    assert all(r.regressed is regressed for r in rows)
    assert all(r.worse_by == pytest.approx(shift, abs=0.02) for r in rows)


def test_p_values_are_one_sided_and_holm_adjusted() -> None:
    base, cand = per_layer(BASE), per_layer(CAND, shift=-0.005)
    rows = compare(base, cand, tolerance=0.0, alpha=0.05, generator=gen())
    raw = permutation_difference(base.unit_values(), cand.unit_values(), alternative="less",
                                 generator=gen(), n_perm=2000).p_value
    np.testing.assert_allclose([r.p for r in rows], holm(raw))
    assert any(r.p > p for r, p in zip(rows, raw))  # the adjustment did something


def test_scalar_pairwise_measurement() -> None:
    base, cand = pairwise(BASE), pairwise(CAND, shift=-0.1)
    (r,) = compare(base, cand, tolerance=0.02, alpha=0.05, generator=gen(), label="adam:resid_cka")
    assert r.layer is None and r.metric == "adam:resid_cka" and r.regressed
    assert r.baseline == pytest.approx(float(base.value))  # unit means = family mean over pairs
    assert r.obtained == pytest.approx(float(cand.value))


def test_deterministic_given_the_generator() -> None:
    a = compare(per_layer(BASE), per_layer(CAND), tolerance=0.02, alpha=0.05, generator=gen(3))
    b = compare(per_layer(BASE), per_layer(CAND), tolerance=0.02, alpha=0.05, generator=gen(3))
    assert a == b


@pytest.mark.parametrize("kw, match", [
    ({"tolerance": -0.1}, "tolerance: expected a finite number >= 0"),
    ({"tolerance": math.nan}, "tolerance: expected a finite number >= 0"),
    ({"tolerance": True}, "tolerance: expected a finite number >= 0"),
    ({"tolerance": "0.1"}, "tolerance: expected a finite number >= 0"),
    ({"alpha": 0.0}, "alpha: expected a level strictly between 0 and 1"),
    ({"alpha": 1.0}, "alpha: expected a level strictly between 0 and 1"),
    ({"n_perm": 0}, "n_perm: expected a positive int"),
])
def test_parameter_errors(kw: dict, match: str) -> None:
    args = {"tolerance": 0.02, "alpha": 0.05, "n_perm": 100, **kw}
    with pytest.raises(ValueError, match=match):
        compare(per_layer(BASE), per_layer(CAND), generator=gen(), **args)
    with pytest.raises(ValueError, match=match):
        check_parameters(args["tolerance"], args["alpha"], args["n_perm"])


def test_measurement_mismatch_errors() -> None:
    base = per_layer(BASE)
    with pytest.raises(ValueError, match="baseline measures 'head_stability' but the candidate 'x'"):
        compare(base, per_layer(CAND, name="x"), tolerance=0.1, alpha=0.05, generator=gen())
    with pytest.raises(ValueError, match="higher_is_better is True in the baseline but False"):
        compare(base, per_layer(CAND, higher=False), tolerance=0.1, alpha=0.05, generator=gen())
    with pytest.raises(ValueError, match=r"head_stability: baseline has shape \(4,\) per seed but "
                                         r"the candidate \(8,\)"):
        compare(base, per_layer(CAND, L=8), tolerance=0.1, alpha=0.05, generator=gen())


def test_untestable_measurements() -> None:
    v = np.zeros(3)
    bare = Measurement("m", v, v, v, True)
    with pytest.raises(ValueError, match="m: measurement 'm' keeps no seed-level values"):
        compare(bare, bare, tolerance=0.1, alpha=0.05, generator=gen())
    heads = Measurement("m", np.zeros((2, 3)), v, v, True, per_seed=np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="reduce per-head values to layers"):
        compare(heads, heads, tolerance=0.1, alpha=0.05, generator=gen())
    nan = Measurement("m", v, v, v, True, per_seed=np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="^m: values_a: contains NaN"):
        compare(nan, nan, tolerance=0.1, alpha=0.05, generator=gen(), label="m")
    one = Measurement("m", v, v, v, True, per_seed=np.zeros((1, 3)))
    with pytest.raises(ValueError, match="need at least 2 seeds"):
        compare(one, one, tolerance=0.1, alpha=0.05, generator=gen())


# ----------------------------------------------------------------------------- power


def test_min_attainable_p() -> None:
    assert min_attainable_p(4, 4) == pytest.approx(1 / 70)
    assert min_attainable_p(4, 4, n_layers=8) == pytest.approx(8 / 70)
    assert min_attainable_p(20, 20, n_perm=999) == pytest.approx(1 / 1000)  # sampled splits
    assert min_attainable_p(2, 2, n_layers=100) == 1.0


def test_power_note_only_when_the_check_cannot_fail() -> None:
    note = power_note(4, 4, n_layers=8, alpha=0.05)
    assert note and "cannot detect a regression" in note and "across 8 layers" in note
    assert power_note(6, 6, n_layers=4, alpha=0.05) is None
    # the note is right: 4 vs 4 seeds, 8 layers, a huge shift still does not regress
    rows = compare(per_layer(range(4), L=8), per_layer(range(50, 54), L=8, shift=-0.5),
                   tolerance=0.01, alpha=0.05, generator=gen())
    assert not any(r.regressed for r in rows) and all(r.beyond_tolerance for r in rows)


# ----------------------------------------------------------------------------- verdict, report


def _rows() -> list[Row]:
    return (compare(per_layer(BASE), per_layer(CAND, shift=-0.1), tolerance=0.02, alpha=0.05,
                    generator=gen())
            + compare(pairwise(BASE), pairwise(CAND), tolerance=0.02, alpha=0.05,
                      generator=gen()))


def test_verdict_validation_and_dict() -> None:
    with pytest.raises(ValueError, match="status: expected one of"):
        Verdict("failed")
    v = Verdict("regressed", rows=_rows(), notes=["n"], baseline_path="b.json",
                written=["o.json"])
    assert len(v.regressed_rows) == 4 and isinstance(v.rows, tuple)
    d = json.loads(json.dumps(v.to_dict()))
    assert d["status"] == "regressed" and d["written"] == ["o.json"]
    assert d["rows"][0]["flag"] == "REGRESSED" and d["rows"][4]["layer"] is None


def test_report_regressed() -> None:
    v = Verdict("regressed", rows=_rows(), baseline_path="baselines/cpu/s/test_x.json")
    text = format_report(v, seeds_baseline={"adam": list(BASE)}, seeds_candidate=list(CAND),
                         update_command="pytest t.py::test_x --update-baselines",
                         mlflow_run="0123abcd")
    lines = text.splitlines()
    assert lines[0].startswith("seedstab: REGRESSED: 4 of 5 value(s)")
    head = next(i for i, ln in enumerate(lines) if ln.startswith("metric"))
    table = lines[head:head + 7]
    for col in ("layer", "baseline", "obtained", "Δ", "CI(Δ)", "p", "tolerance", "flag"):
        assert col in table[0]
    flag_at = table[0].index("flag")
    assert all(ln[flag_at:].split()[0] in ("REGRESSED", "ok") for ln in table[2:])  # fixed width
    assert table[2].startswith("head_stability") and " REGRESSED" in table[2]
    assert table[6].startswith("resid_cka") and table[6].rstrip().endswith("ok")
    assert "-0.1" in table[2] and "0.0200" in table[2]
    assert "seeds (baseline):  adam: [0, 1, 2, 3, 4, 5]" in text
    assert "seeds (candidate): [100, 101, 102, 103, 104, 105]" in text
    assert "MLflow run: 0123abcd" in text
    assert lines[-1] == ("to accept this result as the new baseline: "
                         "pytest t.py::test_x --update-baselines")


def test_report_other_statuses() -> None:
    kw = dict(seeds_baseline=None, seeds_candidate=[1, 2], update_command="<update-cmd>")
    stale = format_report(Verdict("stale", stale_reasons=["fingerprint of family adam changed"]),
                          **kw)
    assert "STALE baseline (not a regression)" in stale and "REGRESSED" not in stale
    assert "  - fingerprint of family adam changed" in stale and "MLflow" not in stale
    assert "seeds (baseline):  -" in stale and stale.endswith("<update-cmd>")
    missing = format_report(Verdict("missing", written=["x.obtained.json"]), **kw)
    assert "MISSING baseline" in missing and "written:\n  x.obtained.json" in missing
    updated = format_report(Verdict("updated"), **kw)
    assert "UPDATED" in updated and "<update-cmd>" not in updated
    passed = format_report(Verdict("pass", rows=_rows()[4:], notes=["torch differs"]), **kw)
    assert passed.startswith("seedstab: pass") and "notes:\n  - torch differs" in passed
