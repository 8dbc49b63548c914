"""Training throughput: the training loop as it is against the loop it replaced, hooks
present but unused vs a bare model without hook points, and the wall time of training a
family cold. Prints numbers; never asserts.

    python benchmarks/bench_train.py [SPEC[::FAMILY]] [--steps 100] [--repeats 5] [--family-wall]

"Before" is the previous loop, kept here only for this comparison: each step drew its
batch with a Python loop over the sequences, computed the copy mask (a loop over offsets),
read the loss with ``.item()`` and the copy loss with a boolean gather. "After" is
:func:`harness.train.train_seed`: batches drawn 50 steps at a time with tensor ops, the copy
mask and loss only at log steps, losses fetched only there. Competitors alternate (A B A B
...) so a slow spell of the machine hits both; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness.config import FamilyConfig, load_family
from harness.family import obtain_family
from harness.model import build_model
from harness.train import build_optimizer, data_source, deterministic, lm_losses, train_seed

ROOT = Path(__file__).resolve().parents[1]


def tokens_per_s(cfg, *, hooked: bool, steps: int) -> float:
    model = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len, init_seed=0, hooked=hooked)
    opt = build_optimizer(cfg, model)
    source = data_source(cfg)
    g = torch.Generator().manual_seed(0)
    batches = [source.sample(cfg.train.batch_size, generator=g) for _ in range(steps + 3)]
    for b in batches[:3]:  # warm-up
        loss, _ = lm_losses(model, b.tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = time.perf_counter()
    for b in batches[3:]:
        loss, _ = lm_losses(model, b.tokens, b.copy_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * cfg.train.batch_size * (cfg.data.seq_len - 1) / (time.perf_counter() - t)


def _legacy_sample(lang, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous SyntheticLanguage.sample: the span placed sequence by sequence, and the
    copy mask (one pass per offset) of every batch."""
    T, V = lang.seq_len, lang.vocab_size
    toks = torch.empty(n, T, dtype=torch.long)
    toks[:, 0] = torch.multinomial(lang.unigram, n, replacement=True, generator=generator)
    choice = torch.multinomial(lang.successor_probs, n * T, replacement=True, generator=generator).view(n, T)
    k = lang.successors.shape[1]
    for t in range(1, T):
        c = choice[:, t]
        if lang.ngram_order == 3 and t >= 2:
            c = (c + lang.rotation[toks[:, t - 2], toks[:, t - 1]].long()) % k
        toks[:, t] = lang.successors[toks[:, t - 1], c]
    u = torch.rand(n, 4, generator=generator, dtype=torch.double)
    dist = lang.unigram if lang.span_tokens == "zipf" else torch.full((V,), 1.0 / V, dtype=torch.double)
    seg = torch.multinomial(dist, n * lang.span_max, replacement=True, generator=generator).view(n, -1)
    for i in range(n):
        if u[i, 3] >= lang.p_repeat:
            continue
        L = lang.span_min + int(u[i, 0] * (lang.span_max - lang.span_min + 1))
        r = max(2, min(lang.repeats_min + int(u[i, 1] * (lang.repeats_max - lang.repeats_min + 1)), T // L))
        start = int(u[i, 2] * (T - r * L + 1))
        toks[i, start:start + r * L] = seg[i, :L].repeat(r)
    return toks, _legacy_copy_mask(toks)


def _legacy_copy_mask(tok: torch.Tensor, min_span: int = 6) -> torch.Tensor:
    B, T = tok.shape
    mask = torch.zeros(B, T, dtype=torch.bool)
    pos = torch.arange(T)
    for d in range(1, T):
        eq = torch.zeros(B, T, dtype=torch.bool)
        eq[:, d:] = tok[:, d:] == tok[:, :-d]
        if not eq.any():
            continue
        start = torch.cummax(torch.where(~eq, pos, torch.full_like(pos, -1).expand(B, T)), dim=1).values + 1
        nxt = torch.where(~eq, pos, torch.full_like(pos, T).expand(B, T))
        end = torch.flip(torch.cummin(torch.flip(nxt, [1]), dim=1).values, [1]) - 1
        mask |= eq & (end - start + 1 >= min_span) & (pos > start)
    return mask


def legacy_steps_per_s(cfg: FamilyConfig, steps: int) -> float:
    """The previous loop (see the module docstring), timed from model build to last step."""
    t = time.perf_counter()
    model = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len, init_seed=0)
    opt = build_optimizer(cfg, model)
    lang, g = data_source(cfg), torch.Generator().manual_seed(0)
    for step in range(steps):
        tokens, mask = _legacy_sample(lang, cfg.train.batch_size, g)
        logits = model(tokens)
        per_tok = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                    tokens[:, 1:].reshape(-1), reduction="none")
        m = mask[:, 1:].reshape(-1)
        copied = per_tok[m].mean() if m.any() else None
        loss = per_tok.mean()
        value = loss.item()  # the per-step host sync
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % cfg.train.log_every == 0 and copied is not None:
            copied.item()
    return steps / (time.perf_counter() - t) if value == value else float("nan")


def current_steps_per_s(cfg: FamilyConfig, steps: int) -> float:
    t = time.perf_counter()
    train_seed(cfg.replace(train={"steps": steps}), 0, device=torch.device("cpu"))
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=str(ROOT / "suites/smoke/smoke.yaml::adam"))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--family-wall", action="store_true", help="also train the whole family cold and time it")
    args = ap.parse_args()
    cfg = load_family(args.spec)
    with deterministic(torch.device("cpu"), cfg.train.threads):
        run(cfg, args)


def run(cfg: FamilyConfig, args: argparse.Namespace) -> None:
    """Measure and print, under the family's thread count and determinism settings."""
    print(f"spec {args.spec}: {cfg.model.n_layers} layers, d_model {cfg.model.d_model}, attn_only "
          f"{cfg.model.attn_only}, batch {cfg.train.batch_size} x {cfg.data.seq_len}, threads {cfg.train.threads}")
    before, after = [], []
    for _ in range(args.repeats):
        before.append(legacy_steps_per_s(cfg, args.steps))
        after.append(current_steps_per_s(cfg, args.steps))
    mb, ma = statistics.median(before), statistics.median(after)
    print(f"loop before (per-step sync, per-step data): median {mb:.1f} steps/s  "
          f"(runs: {', '.join(f'{x:.1f}' for x in before)})")
    print(f"loop after (train_seed):                    median {ma:.1f} steps/s  "
          f"(runs: {', '.join(f'{x:.1f}' for x in after)})")
    print(f"speed-up: {ma / mb:.2f}x ({args.steps} steps a run)")
    hooked, bare = [], []
    for _ in range(args.repeats):
        hooked.append(tokens_per_s(cfg, hooked=True, steps=args.steps))
        bare.append(tokens_per_s(cfg, hooked=False, steps=args.steps))
    mh, mb = statistics.median(hooked), statistics.median(bare)
    print(f"hooks present, unused: median {mh:,.0f} tok/s  (runs: {', '.join(f'{x:,.0f}' for x in hooked)})")
    print(f"bare, no hook points:  median {mb:,.0f} tok/s  (runs: {', '.join(f'{x:,.0f}' for x in bare)})")
    print(f"hook overhead: {100 * (mb - mh) / mb:+.1f} % (target: under 5 %)")
    if args.family_wall:
        with tempfile.TemporaryDirectory() as store:
            t = time.perf_counter()
            fam = obtain_family(cfg, store=store, device="cpu")
            cold = time.perf_counter() - t
            t = time.perf_counter()
            obtain_family(cfg, store=store, device="cpu")
            warm = time.perf_counter() - t
        print(f"family {cfg.name}: {len(fam.seeds)} seeds x {cfg.train.steps} steps: cold {cold:.1f} s, "
              f"warm (store hit) {warm:.2f} s")
        for s in fam.seeds:
            print(f"  seed {s.seed}: final loss {s.log['final_loss']:.3f}, copy loss {s.log['final_copy_loss']:.3f}, "
                  f"{s.log['tokens_per_s']:,.0f} tok/s")


if __name__ == "__main__":
    main()
