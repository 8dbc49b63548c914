"""The analysis cache: a rerun over the same seeds computes nothing; any change recomputes."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import textwrap

import numpy as np
import pytest
import torch

from harness import analysis_cache
from harness.analysis import AnalysisOptions, analyze
from harness.analysis_cache import analyze_cached, cache_key, key_parts
from harness.config import load_family
from harness.family import obtain_family
from harness.provenance import metric_digest, store_fingerprint
from harness.results import Analysis, Measurement

SPEC = """
    name: tiny_cache
    seeds: [0, 1, 2]
    model: {n_layers: 2, n_heads: 2, d_model: 16, d_mlp: 32}
    data: {vocab_size: 32, seq_len: 24, synthetic: {span_min: 4, span_max: 8}}
    train: {lr: 3.0e-3, steps: 10, batch_size: 8}
    probe: {n_prompts: 6}
"""
FULL = AnalysisOptions(n_boot=50)
CHEAP = AnalysisOptions(n_boot=50, step0=False, importance=False, cross_layer=False, kernels=("linear",),
                        prompt_lengths=(1.0,))


def same_analysis(a: Analysis, b: Analysis, *, timings: bool = True) -> bool:
    """Every field equal, every array element included (NaN equal to NaN; info as JSON;
    ``timings=False``: the info's timings of two computations may differ)."""
    head = ("family", "fingerprint", "seeds", "device_class", "probe_digest")
    if any(getattr(a, f) != getattr(b, f) for f in head) or set(a.measurements) != set(b.measurements):
        return False
    skip = () if timings else ("timings_s", "analysis_s")
    if json.dumps({k: v for k, v in a.info.items() if k not in skip}, sort_keys=True) != \
            json.dumps({k: v for k, v in b.info.items() if k not in skip}, sort_keys=True):
        return False
    for name, ma in a.measurements.items():
        mb = b.measurements[name]
        for f in dataclasses.fields(ma):
            x, y = getattr(ma, f.name), getattr(mb, f.name)
            if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                if x is None or y is None or x.dtype != y.dtype or x.shape != y.shape \
                        or not np.array_equal(x, y, equal_nan=True):
                    return False
            elif x != y:
                return False
    return True


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny_cache.yaml"
    path.write_text(textwrap.dedent(SPEC))
    return obtain_family(load_family(path), store=tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def cheap(family, tmp_path_factory):
    """The CHEAP analysis of the family and the cache entry it was stored in."""
    d = tmp_path_factory.mktemp("cheap")
    a = analyze_cached(family, options=CHEAP, cache_dir=d)
    (path,) = d.glob("*.json")
    return a, path


@pytest.fixture
def computations(monkeypatch):
    """How many analyses were computed (not read from the cache)."""
    calls = []
    real = analyze.analyze_family

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(analyze, "analyze_family", counting)
    return calls


def _forbid_measuring(monkeypatch):
    from harness.metrics import cka, heads

    def boom(*args, **kwargs):
        raise AssertionError("a metric function ran on a cache hit")

    for module, name in ((analyze, "capture_family"), (heads, "similarity"), (heads, "head_stability"),
                         (cka, "layer_cka"), (cka, "head_output_cka")):
        monkeypatch.setattr(module, name, boom)


def test_a_second_call_reads_the_cache_and_measures_nothing(family, tmp_path, monkeypatch, computations):
    first = analyze_cached(family, options=FULL, cache_dir=tmp_path)
    assert len(computations) == 1
    entries = list(tmp_path.glob("*.json"))
    assert len(entries) == 1
    _forbid_measuring(monkeypatch)
    second = analyze_cached(family, options=FULL, cache_dir=tmp_path)
    assert len(computations) == 1
    assert same_analysis(first, second)  # the round trip is exact, measurement by measurement
    assert second.measurements.keys() == first.measurements.keys() and len(first.measurements) > 40
    assert second["gap.paper"].bounds == (-1.0, 1.0)
    entry = json.loads(entries[0].read_text())
    assert entry["key"] == entries[0].stem and entry["parts"]["options"]["n_boot"] == 50


def test_non_finite_values_and_notes_survive_the_round_trip(tmp_path):
    m = Measurement(name="importance.delta_ppl", value=np.array([np.inf, 1.5]), lo=np.array([np.nan, -np.inf]),
                    hi=np.array([np.inf, 2.0]), higher_is_better=False, per_seed=np.array([[np.inf, 1.0]] * 3),
                    n_seeds=3, bounds=(None, None), ci_note="note", baselinable=False, baseline_note="why")
    a = Analysis(family="f", fingerprint="fp", seeds=(0, 1, 2), device_class="cpu", probe_digest="d",
                 measurements={m.name: m}, info={"x": [float("nan"), 1], "y": {"z": None}})
    analysis_cache._write(tmp_path / "k.json", "k", {}, a)
    back = analysis_cache._read(tmp_path / "k.json", "k")
    assert same_analysis(a, back)
    assert not same_analysis(a, dataclasses.replace(a, seeds=(0, 1, 3)))  # the comparison can fail


def test_every_key_part_changes_the_key(family, monkeypatch):
    tokens = analyze.probe_tokens(family.config)
    base = cache_key(key_parts(family, options=CHEAP, tokens=tokens))
    assert base == cache_key(key_parts(family, options=CHEAP, tokens=tokens.clone()))  # a content key
    edited = copy.deepcopy(family)
    with torch.no_grad():
        edited.seeds[1].model.blocks[0].attn.W_Q.weight[0, 0] += 1e-3
    fewer = dataclasses.replace(family, seeds=family.seeds[:2] + family.seeds[:1])
    variants = {
        "options": lambda: key_parts(family, options=dataclasses.replace(CHEAP, n_boot=51), tokens=tokens),
        "probe": lambda: key_parts(family, options=CHEAP, tokens=tokens.flip(0)),
        "weights": lambda: key_parts(edited, options=CHEAP, tokens=tokens),
        "seed keys": lambda: key_parts(fewer, options=CHEAP, tokens=tokens),
    }
    keys = {what: cache_key(make()) for what, make in variants.items()}
    monkeypatch.setattr(analysis_cache, "_metric_code", lambda: "0badc0de")
    keys["metric code"] = cache_key(key_parts(family, options=CHEAP, tokens=tokens))
    monkeypatch.undo()
    monkeypatch.setattr(analysis_cache, "_store_fingerprint", lambda fam: "retrained-elsewhere")
    keys["store fingerprint"] = cache_key(key_parts(family, options=CHEAP, tokens=tokens))
    assert all(k != base for k in keys.values()), keys
    assert len(set(keys.values())) == len(keys)
    monkeypatch.undo()  # the memoised digests are the real ones
    assert analysis_cache._metric_code() == metric_digest()
    assert analysis_cache._store_fingerprint(family) == store_fingerprint(family.config)


def test_changed_options_recompute_and_keep_both_entries(family, cheap, tmp_path, computations):
    (tmp_path / cheap[1].name).write_bytes(cheap[1].read_bytes())
    analyze_cached(family, options=CHEAP, cache_dir=tmp_path)
    assert len(computations) == 0
    other = analyze_cached(family, options=dataclasses.replace(CHEAP, n_boot=51), cache_dir=tmp_path)
    assert len(computations) == 1 and other.info["n_boot"] == 51
    analyze_cached(family, options=CHEAP, cache_dir=tmp_path)
    assert len(computations) == 1 and len(list(tmp_path.glob("*.json"))) == 2


@pytest.mark.parametrize("damage, why", [
    (lambda text: text[: len(text) // 2], "not JSON"),
    (lambda text: text.replace('"n_prompts": 6', '"n_prompts": 7'), "checksum mismatch"),
    (lambda text: "[]", "not an analysis cache entry"),
])
def test_a_corrupt_entry_is_recomputed_and_replaced_with_a_warning(family, cheap, tmp_path, computations, caplog,
                                                                   damage, why):
    first, entry = cheap
    path = tmp_path / entry.name
    path.write_text(damage(entry.read_text()))
    with caplog.at_level(logging.WARNING, logger="harness.analysis_cache"):
        again = analyze_cached(family, options=CHEAP, cache_dir=tmp_path)
    assert len(computations) == 1 and same_analysis(first, again, timings=False)
    assert any(str(path) in r.getMessage() and why in r.getMessage() for r in caplog.records), caplog.text
    analyze_cached(family, options=CHEAP, cache_dir=tmp_path)  # replaced: the next call reads it
    assert len(computations) == 1


def test_an_unusable_cache_dir_costs_a_warning_not_the_result(family, tmp_path, caplog, computations):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING, logger="harness.analysis_cache"):
        a = analyze_cached(family, options=CHEAP, cache_dir=blocker / "analyses")
    assert len(computations) == 1 and "head_stability.all_anchors" in a.measurements
    assert "computing tiny_cache without it" in caplog.text
    analyze_cached(family, options=CHEAP, cache_dir=None)
    assert len(computations) == 2
