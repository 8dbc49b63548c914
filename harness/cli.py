"""The ``seedstab`` command: train families, list the store, analyze families.

The CLI talks to people: it prints, shows progress bars and turns every bad input into
one line on stderr and exit code 2 (never a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys
from pathlib import Path
from typing import Iterator, Sequence

from harness.config import ConfigError

EXIT_BAD_INPUT = 2


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, metavar="DIR",
                   help="trained-seed store (default: $SEEDSTAB_STORE or ./.seedstab/store)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the spec's train.device)")


def _pack(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected auto or a positive integer, got {value!r}")
    return n


def _add_training(p: argparse.ArgumentParser) -> None:
    """How families train: progress display, seeds packed together, where they run."""
    p.add_argument("--progress", choices=("auto", "bar", "lines", "off"), default="auto",
                   help="training progress on stderr: bar, lines (a plain line every ~10 %%, for logs), "
                        "off; auto (default): bars on a terminal, lines otherwise")
    p.add_argument("--no-progress", dest="progress", action="store_const", const="off",
                   help="the same as --progress off")
    p.add_argument("--pack", type=_pack, default=None, metavar="N",
                   help="seeds of a family trained together in one batched model (default: auto)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where seeds train: local (this process, default) or ray (a Ray cluster)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="the Ray cluster for --executor ray (default: $RAY_ADDRESS, else a local Ray)")


@contextlib.contextmanager
def _training(args: argparse.Namespace) -> Iterator[dict]:
    """obtain_family's keyword arguments for how to train, from the command line; the
    executor is closed afterwards (a Ray executor's connection)."""
    import importlib.util
    import os

    if args.ray_address and args.executor != "ray":
        raise ValueError("--ray-address is for --executor ray; add it or drop the address")
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError("--executor ray needs the [ray] extra: pip install 'seedstab[ray]' "
                         "(or use --executor local)")
    from harness.executors import make_executor

    executor = make_executor(args.executor, address=args.ray_address or os.environ.get("RAY_ADDRESS") or None)
    try:
        yield {"progress": args.progress, "pack": args.pack, "executor": executor}
    finally:
        executor.close()


def _store_dir(args: argparse.Namespace) -> Path:
    import os

    from harness.family import DEFAULT_STORE

    return Path(args.store or os.environ.get("SEEDSTAB_STORE") or DEFAULT_STORE)


def build_parser() -> argparse.ArgumentParser:
    from harness.stats import CI_METHODS

    parser = argparse.ArgumentParser(
        prog="seedstab",
        description="Regression tests for the seed stability of transformer internals. "
                    "Train seed families, measure how alike their attention heads and residual "
                    "streams are, and compare against stored baselines.",
        epilog="Run the stability suites with pytest: `pytest suites`. See README.md.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train every seed of a spec's families (cached in the store)",
                       description="Train (or load from the store) every seed of SPEC. SPEC is a family "
                                   "file, a suite file (all its families) or FILE::FAMILY.")
    t.add_argument("spec", nargs="+", metavar="SPEC")
    _add_common(t)
    t.add_argument("--force", action="store_true", help="retrain even seeds the store already holds")
    _add_training(t)

    ls = sub.add_parser("ls", help="list the trained seeds the store holds")
    ls.add_argument("--store", default=None, metavar="DIR")

    a = sub.add_parser("analyze", help="compute every stability metric of one or more families",
                       description="Load or train the families of each SPEC, compute the stability "
                                   "metrics with seed-level CIs, write report.json and PNG plots "
                                   "into --out and print a compact table.")
    a.add_argument("spec", nargs="+", metavar="SPEC")
    a.add_argument("--out", required=True, metavar="DIR", help="folder for report.json and the plots")
    _add_common(a)
    a.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap resamples (comparisons; multi-bootstrap CIs) (default 1000)")
    a.add_argument("--ci-method", choices=CI_METHODS, default="jackknife-t",
                   help="confidence intervals: jackknife-t over seeds (default; nominal coverage at 4-10 "
                        "seeds) or the percentile Multi-Bootstrap (undercovers small families)")
    _add_training(a)

    c = sub.add_parser(
        "check", help="is a changed family less stable than its reference? (the gate, outside pytest)",
        description="Run checks: SUITE.yaml runs every check of its checks: section; SUITE.yaml::NAME "
                    "runs check NAME, or family NAME against itself (same family, code edited), or, "
                    "with --reference, family NAME against the reference family. The reference's "
                    "per-seed values come from its baseline (baselines/<device>/<suite>/<family>.json); "
                    "only the candidate trains. Exit 0 when every check passes, 1 when one fails "
                    "(REGRESSED, INCONCLUSIVE by default, STALE, MISSING, UNDERPOWERED, INVALID), 2 on "
                    "bad input.")
    c.add_argument("spec", nargs="+", metavar="SPEC")
    c.add_argument("--reference", metavar="FILE::FAMILY", help="the reference family (default: the "
                   "check's, or the candidate itself)")
    c.add_argument("--baseline", metavar="FILE", help="the reference's baseline file (default: its "
                   "place under --baselines-dir)")
    c.add_argument("--baselines-dir", default="baselines", metavar="DIR",
                   help="root of the stored baselines (default: ./baselines)")
    c.add_argument("--update-baselines", "--seedstab-update-baselines", action="store_true",
                   help="train (or load) the reference and rewrite its baseline, then compare "
                        "(the second spelling is pytest's)")
    c.add_argument("--metrics", nargs="+", metavar="M", help="metrics (default: the suite's regression.metrics)")
    c.add_argument("--tolerance", type=float, help="absolute tolerance for every metric")
    c.add_argument("--alpha", type=float, help="false-alarm rate of each check (default: the suite's)")
    c.add_argument("--inconclusive", choices=("fail", "pass"), default=None,
                   help="whether worse-than-tolerance without a significant test fails (default: the "
                        "check's inconclusive:, else pass)")
    c.add_argument("--seedstab-seed", type=int, default=None, metavar="N",
                   help="shift the candidate's seeds by N (fresh seeds; the reference keeps its own)")
    _add_common(c)
    c.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    m = sub.add_parser("mlflow", help="MLflow housekeeping: seedstab mlflow sync")
    msub = m.add_subparsers(dest="mlflow_command", metavar="COMMAND")
    ms = msub.add_parser("sync", help="log the runs kept in .seedstab/unlogged (a tracking server was "
                                      "unreachable) to MLflow now",
                         description="Replay every folder under --dir into the tracking store, then move "
                                     "it to DIR/synced/ so it is not logged twice. Exit 0 when all were "
                                     "logged, 1 when some could not be (they stay for the next sync).")
    ms.add_argument("--dir", default=".seedstab/unlogged", metavar="DIR",
                    help="where the unlogged runs are (default: ./.seedstab/unlogged)")
    ms.add_argument("--mlflow-uri", metavar="URI", default=None,
                    help="tracking store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    c.add_argument("--ci-method", choices=CI_METHODS, default="jackknife-t")
    _add_training(c)
    return parser


def _families(specs: Sequence[str]):
    from harness.config import load_family, load_suite

    out = []
    for spec in specs:
        if "::" in spec:
            out.append(load_family(spec))
        else:
            out.extend(load_suite(spec).families.values())
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from harness.family import obtain_family
    from harness.store import Store

    store = Store(_store_dir(args))
    with _training(args) as training:
        for cfg in _families(args.spec):
            fam = obtain_family(cfg, store=store, device=args.device, force=args.force, **training)
            n = len(fam.seeds)
            if fam.trained_now == 0:
                print(f"{cfg.name}: all {n} seeds already in the store ({fam.fingerprint}, "
                      f"{fam.device_class}); nothing to train")
            else:
                print(f"{cfg.name}: trained {fam.trained_now} of {n} seeds ({fam.fingerprint}, "
                      f"{fam.device_class})")
            for s in fam.seeds:
                lg = s.log
                print(f"  seed {s.seed:>3}  final loss {lg.get('final_loss', float('nan')):.4f}  "
                      f"copy loss {lg.get('final_copy_loss', float('nan')):.4f}  "
                      f"{lg.get('tokens_per_s', 0):,.0f} tok/s  {lg.get('wall_s', 0):.1f}s"
                      f"{'  (new)' if s.trained_now else ''}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from harness.store import Store

    store = Store(_store_dir(args))
    entries = store.entries()
    if not entries:
        print(f"the store at {store.root} holds no trained seeds")
        return 0
    # store keys are fingerprint-h<harness>[-code<user code>], so the column fits the longest
    w = max(len("fingerprint"), *(len(e.fingerprint) for e in entries))
    print(f"{'family':<20} {'fingerprint':<{w}} {'device':<16} {'seed':<14} {'steps':>6} {'loss':>7} {'MB':>6}")
    for e in entries:
        loss = f"{e.final_loss:.3f}" if isinstance(e.final_loss, (int, float)) else "-"
        print(f"{str(e.name):<20} {e.fingerprint:<{w}} {e.device_class:<16} {e.seed_key:<14} "
              f"{e.steps if e.steps is not None else '-':>6} {loss:>7} {e.size_bytes / 1e6:>6.2f}")
    print(f"{len(entries)} seeds in {store.root}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from harness.report import analyze_command

    with _training(args) as training:
        return analyze_command(_families(args.spec), out=Path(args.out), store=_store_dir(args),
                               device=args.device, n_boot=args.n_boot, ci_method=args.ci_method,
                               **training)


def _checks(args: argparse.Namespace):
    """The CheckSpecs the command line names."""
    from harness.checks import default_check, load_checks
    from harness.config import load_suite

    overrides = {"metrics": args.metrics, "tolerance": args.tolerance, "alpha": args.alpha}
    reference = None
    if args.reference:
        file, sep, name = args.reference.partition("::")
        if not sep or not name:
            raise ConfigError("--reference", "", f"expected FILE::FAMILY, got {args.reference!r}")
        reference = f"{Path(file).resolve()}::{name}"
    out = []
    for spec in args.spec:
        file, sep, name = spec.partition("::")
        suite = load_suite(file)
        if not sep:
            if reference is not None:
                raise ConfigError(spec, "", "--reference needs the candidate as FILE::FAMILY")
            checks = load_checks(suite)
            if not checks:
                raise ConfigError(spec, "checks", "this file declares no checks; name a family as "
                                  "FILE::FAMILY to check it against its own baseline")
            out += [_override(c, overrides) for c in checks.values()]
            continue
        checks = load_checks(suite)
        if name in checks and reference is None:
            out.append(_override(checks[name], overrides))
        elif name in suite.families:
            out.append(default_check(suite, name, reference, overrides=overrides))
        else:
            raise ConfigError(file, f"checks.{name}", f"no check or family {name!r}; checks: "
                              f"{', '.join(checks) or 'none'}; families: {', '.join(suite.families)}")
    return out


def _override(check, overrides):
    """``check`` with the command line's --metrics / --tolerance / --alpha; a metric's
    tolerance comes from --tolerance, else the check's, else its file's regression defaults."""
    import dataclasses

    from harness.checks import default_tolerance

    changes = {}
    metrics = tuple(overrides["metrics"]) if overrides["metrics"] else check.metrics
    if overrides["metrics"]:
        changes["metrics"] = metrics
    if overrides["tolerance"] is not None or overrides["metrics"]:
        t = overrides["tolerance"]
        changes["tolerance"] = {m: t if t is not None else
                                check.tolerance[m] if m in check.tolerance else default_tolerance(check, m)
                                for m in metrics}
    if overrides["alpha"] is not None:
        changes["alpha"] = overrides["alpha"]
    return dataclasses.replace(check, **changes) if changes else check


def cmd_check(args: argparse.Namespace) -> int:
    from harness.analysis import AnalysisOptions
    from harness.analysis_cache import analyze_cached
    from harness.family import device_class, obtain_family, resolve_device
    from harness.gate import baseline_metrics, run_check
    from harness.verdict import check_parameters

    checks = _checks(args)
    for c in checks:
        for t in c.tolerance.values():
            check_parameters(t, c.alpha)
    options = AnalysisOptions(n_boot=args.n_boot, ci_method=args.ci_method)
    store = _store_dir(args)
    with _training(args) as training:
        cache: dict = {}

        def analyze(cfg):
            key = (cfg.source, cfg.name, tuple(cfg.seeds))
            if key not in cache:
                fam = obtain_family(cfg, store=store, device=args.device, **training)
                cache[key] = analyze_cached(fam, options=options, cache_dir=Path(store) / "analyses")
            return cache[key]

        failed, updated = 0, set()
        argv = [a for a in (sys.argv[1:] if args.argv is None else args.argv)
                if a not in ("--update-baselines", "--seedstab-update-baselines")]
        cmd = shlex.join(["seedstab", *argv, "--update-baselines"])
        for c in checks:
            dev = device_class(resolve_device(args.device or c.candidate.train.device))
            out = run_check(c, analyze=analyze, baselines_dir=Path(args.baselines_dir), device_class=dev,
                            options=options, update=args.update_baselines,
                            baseline_metrics=baseline_metrics(c, checks),
                            seed_offset=args.seedstab_seed, inconclusive=args.inconclusive,
                            update_command=cmd, already_updated=updated,
                            baseline=Path(args.baseline) if args.baseline else None)
            print(out.report)
            print()
            failed += out.verdict.failed
        word = "all passed" if not failed else f"{failed} failed"
        print(f"seedstab check: {len(checks)} check(s), {word}")
    return 1 if failed else 0


def cmd_mlflow(args: argparse.Namespace) -> int:
    if args.mlflow_command != "sync":
        print("seedstab mlflow: give a command: sync", file=sys.stderr)
        return EXIT_BAD_INPUT
    from harness.mlflow_sync import sync
    from harness.tracking import tracking_uri

    root, uri = Path(args.dir), tracking_uri(args.mlflow_uri)
    result = sync(root, uri=uri)
    total = len(result.logged) + len(result.failed)
    if not total:
        print(f"seedstab mlflow sync: nothing to log under {root}")
        return 0
    for folder, run_id in result.logged.items():
        print(f"logged {Path(folder).name}: run {run_id}")
    for folder, why in result.failed.items():
        print(f"NOT logged {Path(folder).name}: {why}", file=sys.stderr)
    print(f"seedstab mlflow sync: {len(result.logged)} of {total} logged to {uri}"
          + (f"; {len(result.failed)} left in {root}" if result.failed else ""))
    return 1 if result.failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = None if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return {"train": cmd_train, "ls": cmd_ls, "analyze": cmd_analyze,
                "check": cmd_check, "mlflow": cmd_mlflow}[args.command](args)
    except ConfigError as e:
        print(f"seedstab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"seedstab: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(e, (FileNotFoundError, ValueError)) else 1
    except BrokenPipeError:  # output piped into `head` and cut short: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("seedstab: interrupted; finished seeds and the last checkpoint are kept in the store",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
