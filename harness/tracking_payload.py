"""What goes into MLflow, built without talking to it (pure: no MLflow, no pytest).

A *family run* (one per family per pytest session, named ``<suite>/<family>``): the family's
config as params, every scalar and per-layer value as a metric (per-layer values with
step = layer), one child run per seed (loss curve, final loss and perplexity, throughput).
The intervals around the values are not metrics (two more charts per metric would bury the
values): they are the table ``intervals.csv``. A *verdict* (one per test or check that used
the family): the tag ``verdict.<label>`` and the files ``verdicts/<label>.json`` (the rows
that decided it: Δ, CI, p, MDE, tolerance, flag) and ``verdicts/<label>.md`` (the same as a
table a person reads). The run's ``verdict`` tag is the worst of its verdicts, and its
description (``mlflow.note.content``) lists them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.results import Analysis

__all__ = ["flatten", "sanitize_key", "metric_points", "interval_rows", "family_payload",
           "verdict_label", "verdict_record", "verdict_markdown", "summary_verdict", "run_note"]

# MLflow's request limits (mlflow.utils.validation, 3.17): a param value at most 6000 chars,
# a tag value 8000, a key 250.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
VERDICT_TAG = "verdict"
NOTE_TAG = "mlflow.note.content"  # the run page's description box (Markdown)
# worst first: a run's ``verdict`` tag is the worst of its tests' verdicts; an unknown word
# ranks right after "fail"
SEVERITY = ("error", "fail", "regressed", "invalid", "stale", "missing", "underpowered",
            "inconclusive", "skipped", "updated", "pass")


# ---------------------------------------------------------------------------- keys, values


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def sanitize_key(name: str) -> str:
    """A valid MLflow metric/param/tag key: characters outside ``[A-Za-z0-9_.- /]`` become
    ``_`` (colons too: they are invalid on Windows servers), no empty/``.``/``..`` path
    segments, at most 250 chars (a long name keeps a hash of the original, so two long
    names stay distinct)."""
    key = re.sub(r"[^\w.\- /]", "_", str(name), flags=re.ASCII)
    parts = [p if p not in ("", ".", "..") else "_" for p in key.split("/")]
    key = "/".join(parts)
    if len(key) > MAX_KEY:
        digest = hashlib.sha1(str(name).encode()).hexdigest()[:8]
        key = f"{key[:MAX_KEY - 9]}-{digest}"
    return key


def param_value(v: Any) -> str:
    if isinstance(v, str):
        s = v
    elif isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, sort_keys=True, default=str)
    else:
        s = str(v)
    if len(s) > MAX_PARAM_VALUE:
        marker = f"...[truncated, {len(s)} chars; see config.json]"
        s = s[:MAX_PARAM_VALUE - len(marker)] + marker
    return s


def metric_points(name: str, arr: Any) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` points: a scalar at step 0, ``[L]`` with step = layer. Per-head
    ``[L, H]`` and higher ranks are not metrics (H more charts each; ``intervals.csv`` and
    ``analysis.json`` hold them); non-finite values are skipped."""
    a = np.asarray(arr, dtype=float)
    if a.ndim == 0:
        pts = [(name, float(a), 0)]
    elif a.ndim == 1:
        pts = [(name, float(v), i) for i, v in enumerate(a)]
    else:
        return []
    return [(sanitize_key(k), v, s) for k, v, s in pts if math.isfinite(v)]


def finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------------------- family run


def interval_rows(analysis: Analysis) -> list[dict[str, Any]]:
    """One row per value of every measurement: metric, layer, head (``None`` where the
    measurement has no such axis), value, lo, hi (its interval over seeds), n_seeds,
    higher_is_better. Non-finite numbers are ``None``."""
    rows: list[dict[str, Any]] = []
    for name, m in sorted(analysis.measurements.items()):
        v, lo, hi = (np.asarray(x, dtype=float) for x in (m.value, m.lo, m.hi))
        lo, hi = np.broadcast_to(lo, v.shape), np.broadcast_to(hi, v.shape)
        for idx in (np.ndindex(v.shape) if v.ndim <= 2 else ()):
            rows.append({"metric": name, "layer": idx[0] if len(idx) > 0 else None,
                         "head": idx[1] if len(idx) > 1 else None, "value": finite(v[idx]),
                         "lo": finite(lo[idx]), "hi": finite(hi[idx]), "n_seeds": m.n_seeds,
                         "higher_is_better": m.higher_is_better})
    return rows


def intervals_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`interval_rows` as CSV (the MLflow UI shows a ``.csv`` artifact as a table)."""
    cols = ["metric", "layer", "head", "value", "lo", "hi", "n_seeds", "higher_is_better"]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r[c] is None else (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c]) for c in cols])
    return out.getvalue()


def analysis_metrics(analysis: Analysis) -> list[tuple[str, float, int]]:
    pts: list[tuple[str, float, int]] = []
    for name, m in sorted(analysis.measurements.items()):
        pts += metric_points(name, m.value)
    return pts


def seed_payload(i: int, log: Mapping[str, Any], run_name: str) -> dict[str, Any]:
    seed = log.get("seed", i)
    params = {k: param_value(log[k]) for k in ("seed", "init_seed", "data_seed", "steps", "threads", "device")
              if log.get(k) is not None}
    metrics: list[tuple[str, float, int]] = []
    curve = log.get("curve") or []
    for row in curve:
        step = int(row[0])
        for col, key in ((1, "loss"), (2, "copy_loss")):
            if len(row) > col and (v := finite(row[col])) is not None:
                metrics.append((key, v, step))
    final = finite(log.get("final_loss"))
    if final is None and curve:
        final = finite(curve[-1][1])
    if final is not None:
        metrics.append(("final_loss", final, 0))
        if final < 700:  # exp overflows a float beyond ~709
            metrics.append(("final_perplexity", math.exp(final), 0))
    for key in ("tokens_per_s", "wall_s", "final_copy_loss"):
        if (v := finite(log.get(key))) is not None:
            metrics.append((key, v, 0))
    return {"run_name": f"{run_name}/seed{seed}", "seed": seed, "params": params, "metrics": metrics}


def family_payload(*, suite: str, run_name: str, analysis: Analysis, config: Mapping[str, Any],
                   seed_logs: Sequence[Mapping[str, Any]], base_tags: Mapping[str, str]) -> dict[str, Any]:
    """The family run and its seed runs: ``run_name``, ``tags`` (``base_tags`` plus the
    family's identity and the description), ``params``, ``metrics`` ``[(key, value, step)]``,
    ``children`` (one per seed log)."""
    tags = {"suite": suite, "family": analysis.family, "fingerprint": analysis.fingerprint,
            "device": analysis.device_class, "probe_digest": analysis.probe_digest,
            "seeds": ",".join(map(str, analysis.seeds)), **{str(k): str(v) for k, v in base_tags.items()}}
    tags[NOTE_TAG] = run_note(run_name, tags)
    tags = {k: v[:MAX_TAG_VALUE] for k, v in tags.items()}
    params: dict[str, str] = {}
    for k, v in flatten(config).items():
        params.setdefault(sanitize_key(k), param_value(v))
    return {"experiment": f"seedstab/{suite}", "run_name": run_name, "tags": tags, "params": params,
            "metrics": analysis_metrics(analysis),
            "children": [seed_payload(i, log, run_name) for i, log in enumerate(seed_logs)]}


def child_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """A seed run's tags: its family's, less the description and verdicts (they describe
    the family run)."""
    return {k: v for k, v in tags.items() if k != NOTE_TAG and k != VERDICT_TAG
            and not k.startswith(VERDICT_TAG + ".")}


# ---------------------------------------------------------------------------- verdicts


def verdict_label(test_name: str, *, check: bool = False) -> str:
    """The part of a verdict's tag key after ``verdict.``: ``check.<name>`` for a YAML
    check, else the test's name with its parameters after a dot
    (``test_heads[adam]`` -> ``test_heads.adam``)."""
    name = str(test_name)
    if "[" in name and name.endswith("]"):
        base, _, params = name[:-1].partition("[")
        name = f"{base}.{params}"
    return sanitize_key(("check." if check else "") + name)[:MAX_KEY - len(VERDICT_TAG) - 1]


def summary_verdict(verdicts: Sequence[str]) -> str:
    """The worst of ``verdicts`` (see ``SEVERITY``); ``""`` for none."""
    def rank(v: str) -> float:
        return SEVERITY.index(v) if v in SEVERITY else 1.5
    return min(verdicts, key=rank) if verdicts else ""


def verdict_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """``{label: verdict}`` from a run's tags."""
    p = VERDICT_TAG + "."
    return {k[len(p):]: v for k, v in sorted(tags.items()) if k.startswith(p)}


def run_note(run_name: str, tags: Mapping[str, str]) -> str:
    """The family run's description: what it is, its verdicts, where the rest is."""
    lines = [f"**{run_name}**: family `{tags.get('family', '?')}` of suite `{tags.get('suite', '?')}`, "
             f"seeds {tags.get('seeds', '?')}, fingerprint `{tags.get('fingerprint', '?')}`"
             + (f", session `{tags['session']}`" if tags.get("session") else "") + "."]
    verdicts = verdict_tags(tags)
    if verdicts:
        lines += ["", "| test | verdict |", "|---|---|"]
        lines += [f"| `{label}` | {v} |" for label, v in verdicts.items()]
        lines += ["", "The table behind each verdict: `verdicts/<test>.md` (and `.json`) under Artifacts."]
    lines += ["", "Metrics: per-layer values have step = layer (the chart's x axis is the layer); "
              "their intervals over seeds are in `intervals.csv`; every value and seed in `analysis.json`; "
              "one child run per seed holds its loss curve."]
    return "\n".join(lines)


def verdict_record(*, test: str, label: str, run_name: str, verdict: str, outcome: str,
                   verdicts: Sequence[Mapping[str, Any]] = (), report: str = "", failure: str = "",
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``verdicts/<label>.json``: the test, its verdict and outcome, and the rows, design,
    reasons and notes of every gate verdict behind it (``verdicts``: ``Verdict.to_dict()``
    of each, in order); ``report``: the gate's text report; ``failure``: the test's failure."""
    rows = [dict(r) for v in verdicts for r in v.get("rows", ())]
    rec: dict[str, Any] = {
        "test": test, "label": label, "run": run_name, "verdict": verdict, "outcome": outcome,
        "status": [v.get("status") for v in verdicts], "rows": rows,
        "design": "; ".join(dict.fromkeys(str(v["design"]) for v in verdicts if v.get("design"))),
        "reasons": [r for v in verdicts for r in v.get("reasons", ())],
        "notes": [n for v in verdicts for n in v.get("notes", ())],
        "baseline": next((v["baseline_path"] for v in verdicts if v.get("baseline_path")), None),
        "report": report, "failure": failure}
    rec.update(extra or {})
    return rec


def _num(x: Any, signed: bool = False) -> str:
    f = finite(x)
    if f is None:
        return "nan" if x is None or not isinstance(x, (int, float)) else ("inf" if x > 0 else "-inf")
    return f"{f:+.4f}" if signed else f"{f:.4f}"


def _p(x: Any) -> str:
    f = finite(x)
    return "nan" if f is None else (f"{f:.3g}" if f < 0.001 else f"{f:.3f}")


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table padded to fixed width, so it reads as well raw as rendered."""
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(b) for b in body]


def verdict_markdown(rec: Mapping[str, Any]) -> str:
    """``verdicts/<label>.md``: the verdict, the table (metric, layer, reference, candidate,
    Δ, CI(Δ), p, MDE, tolerance, flag), design, reasons, notes, the gate's report."""
    out = [f"# {str(rec['verdict']).upper()}: {rec['label']} on {rec['run']}", "",
           f"- test: `{rec['test']}` ({rec['outcome']})"]
    if rec.get("baseline"):
        out.append(f"- reference baseline: `{rec['baseline']}`")
    rows = rec.get("rows") or []
    if rows:
        body = [[str(r["metric"]), "-" if r.get("layer") is None else str(r["layer"]), _num(r.get("reference")),
                 _num(r.get("candidate")), _num(r.get("delta"), True),
                 f"[{_num(r.get('lo'), True)}, {_num(r.get('hi'), True)}]", _p(r.get("p")), _num(r.get("mde")),
                 _num(r.get("tolerance")), str(r.get("flag", ""))] for r in rows]
        out += ["", *_md_table(["metric", "layer", "reference", "candidate", "Δ", "CI(Δ)", "p", "MDE",
                                "tolerance", "flag"], body), "",
                "Δ = candidate − reference; CI(Δ): per-row interval over seeds; p: one-sided, adjusted "
                "over every row of the check; MDE: minimal detectable effect at 80 % power."]
    elif rec.get("status"):
        out += ["", "No rows: the verdict was reached before any value was compared."]
    else:
        out += ["", "A test of expectations (no gate table); its failure, if any, is below."]
    if rec.get("design"):
        out += ["", f"design: {rec['design']}"]
    for title, key in (("reasons", "reasons"), ("notes", "notes")):
        if rec.get(key):
            out += ["", f"{title}:"] + [f"- {x}" for x in rec[key]]
    for title, key in (("report", "report"), ("failure", "failure")):
        if rec.get(key):
            out += ["", f"## {title}", "", "```text", str(rec[key]).rstrip(), "```"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- files


def jsonable(o: Any) -> Any:
    """Strict JSON: non-finite floats become null (as in Analysis.to_dict), numpy and paths
    become plain values, anything else its repr."""
    if isinstance(o, Mapping):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    if isinstance(o, np.generic):
        return jsonable(o.item())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if o is None or isinstance(o, (str, int, bool)):
        return o
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def safe_filename(name: str) -> str:
    s = re.sub(r"[^\w.\-]+", "_", str(name), flags=re.ASCII).strip("._") or "unnamed"
    return s[:120]


def write_family_files(dest: Path, *, analysis: Analysis, config: Mapping[str, Any],
                       plots: Mapping[str, Path]) -> list[str]:
    """The family run's artifacts: analysis.json, config.json, intervals.csv, plots/<name>.
    Returns the warnings (a plot file that does not exist is left out)."""
    dest.mkdir(parents=True, exist_ok=True)
    dump(dest / "analysis.json", analysis.to_dict())
    dump(dest / "config.json", dict(config))
    (dest / "intervals.csv").write_text(intervals_csv(interval_rows(analysis)))
    warnings = []
    for name, src in plots.items():
        src = Path(src)
        if not src.is_file():
            warnings.append(f"plot {name!r}: {src} does not exist; not logged")
            continue
        target = safe_filename(name)
        if not Path(target).suffix:
            target += src.suffix
        (dest / "plots").mkdir(exist_ok=True)
        shutil.copyfile(src, dest / "plots" / target)
    return warnings


def write_verdict_files(dest: Path, rec: Mapping[str, Any]) -> None:
    """``dest/verdicts/<label>.json`` and ``.md``."""
    d = dest / "verdicts"
    d.mkdir(parents=True, exist_ok=True)
    dump(d / f"{safe_filename(rec['label'])}.json", rec)
    (d / f"{safe_filename(rec['label'])}.md").write_text(verdict_markdown(rec))
