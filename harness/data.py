"""Training and probe data: a synthetic language, text and token files, probe sets."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

# synth-3: spans placed by tensor ops over the batch, batches drawn DATA_CHUNK steps at a time
GENERATOR_VERSION = "synth-3"

# Training batches are drawn this many steps at a time (one draw of DATA_CHUNK * batch_size
# sequences): the per-position loop of the n-gram chain then runs once per chunk, not once
# per step. A constant, not a setting: it decides which data each step sees.
DATA_CHUNK = 50


class Batch:
    """``tokens`` int64 [B, T] and ``copy_mask`` bool [B, T] (:func:`copy_mask` of the
    tokens). The mask is computed when first read: training needs it only at the steps
    that log the copy loss."""

    __slots__ = ("tokens", "_copy_mask")

    def __init__(self, tokens: Tensor, copy_mask: Tensor | None = None) -> None:
        self.tokens = tokens
        self._copy_mask = copy_mask

    @property
    def copy_mask(self) -> Tensor:
        if self._copy_mask is None:
            self._copy_mask = copy_mask(self.tokens)
        return self._copy_mask

    def __repr__(self) -> str:
        return f"Batch(tokens={tuple(self.tokens.shape)})"


def copy_mask(tokens: Tensor, *, min_span: int = 6) -> Tensor:
    """Positions predictable by induction: bool, same shape as ``tokens`` ([T] or [B, T]).

    Token t is marked when it lies inside a repeated run -- ``tokens[a..b] ==
    tokens[a-d..b-d]`` for some offset d >= 1, with ``b - a + 1 >= min_span`` -- and is not
    the run's first token (``t > a``): from the run's 2nd token on, the previous token has
    occurred before and the token after that earlier occurrence is the answer.
    ``min_span`` 6 because the n-gram background repeats itself by chance: at vocab 64
    chance runs mark ~10% of background tokens at min_span 4 and ~1.6% at 6.
    """
    return _copy_runs(tokens, min_span=min_span)[0]


def copy_offsets(tokens: Tensor, *, min_span: int = 6) -> Tensor:
    """int64, same shape as ``tokens``: for a copy position t the smallest offset d of a
    repeated run covering it (the earlier occurrence of ``tokens[t]`` is ``t - d``), else 0.

    An induction head at query ``t - 1`` attends to key ``t - d``.
    """
    return _copy_runs(tokens, min_span=min_span)[1]


# Offsets compared at once by _copy_runs: bounds its temporaries to ~B * 2**20 elements.
_OFFSET_BLOCK_ELEMS = 2**20


def _copy_runs(tokens: Tensor, *, min_span: int) -> tuple[Tensor, Tensor]:
    if min_span < 2:
        raise ValueError(f"copy_mask: min_span must be >= 2, got {min_span}")
    squeeze = tokens.dim() == 1
    tok = tokens.unsqueeze(0) if squeeze else tokens
    B, T = tok.shape
    dev = tok.device
    mask = torch.zeros(B, T, dtype=torch.bool, device=dev)
    offs = torch.zeros(B, T, dtype=torch.long, device=dev)
    pos = torch.arange(T, device=dev)  # (T,)
    block = max(1, _OFFSET_BLOCK_ELEMS // max(T, 1))
    # Offsets d = 1..T-1 in blocks, every offset of a block at once; tensor ops only (no
    # .any() per offset), so on a GPU nothing waits for the device.
    for d0 in range(1, T, block):
        d = torch.arange(d0, min(d0 + block, T), device=dev)  # (D,)
        src = pos[None, :] - d[:, None]  # (D, T): the position d back
        eq = (src >= 0)[None] & (tok[:, None, :] == tok[:, src.clamp(min=0)])  # (B, D, T)
        # run start for every position of a run: the last False before it, + 1
        last_false = torch.where(~eq, pos, -1)
        start = torch.cummax(last_false, dim=2).values + 1  # (B, D, T)
        # run end: the same idea, reversed
        nxt_false = torch.where(~eq, pos, T)
        end = torch.flip(torch.cummin(torch.flip(nxt_false, [2]), dim=2).values, [2]) - 1
        hit = eq & (end - start + 1 >= min_span) & (pos > start)  # (B, D, T)
        found = hit.any(dim=1)  # (B, T)
        first = d[hit.int().argmax(dim=1)]  # (B, T) smallest offset of the block that hits
        offs = torch.where(found & (offs == 0), first, offs)
        mask |= found
    if squeeze:
        return mask[0], offs[0]
    return mask, offs


class GeneratorOptionError(ValueError):
    """Settings :class:`SyntheticLanguage` cannot honour; ``keys`` names the arguments at
    fault, most specific first (the spec loader turns them into dotted keys)."""

    def __init__(self, message: str, keys: tuple[str, ...]) -> None:
        super().__init__(f"SyntheticLanguage: {message}")
        self.detail = message
        self.keys = keys


def _require(ok: bool, msg: str, *keys: str) -> None:
    if not ok:
        raise GeneratorOptionError(msg, keys)


def check_generator_options(*, vocab_size: int, seq_len: int, n_successors: int, ngram_order: int,
                            span_min: int, span_max: int, repeats_min: int, repeats_max: int,
                            span_tokens: str, p_repeat: float) -> None:
    """Raise :class:`GeneratorOptionError` for settings no :class:`SyntheticLanguage` can
    honour; cheap (builds nothing), so the spec loader calls it on every family."""
    _require(vocab_size >= 2, f"vocab_size must be >= 2, got {vocab_size}", "vocab_size")
    _require(ngram_order in (2, 3), f"ngram_order must be 2 or 3, got {ngram_order}", "ngram_order")
    _require(n_successors >= 1, f"n_successors must be >= 1, got {n_successors}", "n_successors")
    _require(span_tokens in ("uniform", "zipf"), f"span_tokens must be 'uniform' or 'zipf', got {span_tokens!r}",
             "span_tokens")
    _require(0.0 <= p_repeat <= 1.0, f"p_repeat must be in [0, 1], got {p_repeat}", "p_repeat")
    _require(2 <= span_min <= span_max, f"need 2 <= span_min <= span_max, got {span_min}, {span_max}",
             "span_min", "span_max")
    _require(2 <= repeats_min <= repeats_max,
             f"need 2 <= repeats_min <= repeats_max, got {repeats_min}, {repeats_max}", "repeats_min", "repeats_max")
    _require(
        seq_len >= 2 * span_max,
        f"seq_len {seq_len} cannot hold two copies of a span of span_max={span_max}; lower span_max or raise seq_len",
        "span_max", "seq_len",
    )


def digest(tokens: Tensor) -> str:
    """sha256 hex digest of the tokens as contiguous little-endian int64 bytes (shape-blind)."""
    arr = tokens.detach().to("cpu", torch.int64).contiguous().numpy()
    return hashlib.sha256(arr.astype("<i8").tobytes()).hexdigest()


class SyntheticLanguage:
    """Deterministic synthetic language: a Zipfian n-gram background with repeated random spans.

    The structure -- Zipf ranks of the tokens, each token's ``n_successors`` successors and,
    for ``ngram_order=3``, which successor the token before it favours -- depends only on
    ``language_seed``; ``sample`` draws sequences from the ``generator`` it is given.

    Each sequence (with probability ``p_repeat``) holds one segment of
    ``span_min..span_max`` uniform random tokens written ``repeats_min..repeats_max`` times
    back to back at a random place (as many as fit in ``seq_len``); the rest is background.
    Every repeat after the first is predictable only by induction, and at the defaults
    about 55% of all tokens are such copies (measured: 0.554 at vocab 64, seq_len 64).
    Why these defaults: with fewer copies (one 8-24 span written 2-3 times, ~33%) a
    2-layer d_model-64 model needs ~1500 Adam steps before copying starts; with the
    defaults, attention-only models form an induction head in 300-500 steps. The
    order-3 background gives the previous token a use of its own (previous-token heads).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        seq_len: int,
        language_seed: int = 0,
        zipf_exponent: float = 1.0,
        n_successors: int = 4,
        ngram_order: int = 3,
        span_min: int = 8,
        span_max: int = 16,
        repeats_min: int = 3,
        repeats_max: int = 6,
        span_tokens: str = "uniform",
        p_repeat: float = 1.0,
    ):
        check_generator_options(vocab_size=vocab_size, seq_len=seq_len, n_successors=n_successors,
                                ngram_order=ngram_order, span_min=span_min, span_max=span_max,
                                repeats_min=repeats_min, repeats_max=repeats_max, span_tokens=span_tokens,
                                p_repeat=p_repeat)
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.language_seed = language_seed
        self.ngram_order = ngram_order
        self.span_min, self.span_max = span_min, span_max
        self.repeats_min, self.repeats_max = repeats_min, repeats_max
        self.span_tokens = span_tokens
        self.p_repeat = p_repeat
        g = torch.Generator().manual_seed(language_seed)
        rank = torch.randperm(vocab_size, generator=g)  # rank[token]
        self.unigram = 1.0 / (rank.double() + 1.0) ** zipf_exponent  # (V,)
        self.unigram /= self.unigram.sum()
        k = min(n_successors, vocab_size)
        self.successors = torch.stack(
            [torch.multinomial(self.unigram, k, replacement=False, generator=g) for _ in range(vocab_size)]
        )  # (V, k), most likely successor first
        w = 1.0 / torch.arange(1, k + 1, dtype=torch.double)
        self.successor_probs = w / w.sum()  # (k,) Zipfian over successor slots
        # order 3: the token before the current one rotates which successor slot is likeliest
        self.rotation = torch.randint(k, (vocab_size, vocab_size), generator=g, dtype=torch.int16)  # (V_prev, V_cur)

    def sample(self, n: int, *, generator: torch.Generator) -> Batch:
        T, V = self.seq_len, self.vocab_size
        toks = torch.empty(n, T, dtype=torch.long)
        toks[:, 0] = torch.multinomial(self.unigram, n, replacement=True, generator=generator)
        choice = torch.multinomial(self.successor_probs, n * T, replacement=True, generator=generator).view(n, T)
        k = self.successors.shape[1]
        for t in range(1, T):
            c = choice[:, t]
            if self.ngram_order == 3 and t >= 2:
                c = (c + self.rotation[toks[:, t - 2], toks[:, t - 1]].long()) % k
            toks[:, t] = self.successors[toks[:, t - 1], c]
        u = torch.rand(n, 4, generator=generator, dtype=torch.double)
        span_dist = self.unigram if self.span_tokens == "zipf" else torch.full((V,), 1.0 / V, dtype=torch.double)
        seg_all = torch.multinomial(span_dist, n * self.span_max, replacement=True, generator=generator).view(n, -1)
        # Each sequence i: a span of L[i] tokens written r[i] times from start[i], all rows at once.
        L = self.span_min + (u[:, 0] * (self.span_max - self.span_min + 1)).long()  # (n,)
        r = self.repeats_min + (u[:, 1] * (self.repeats_max - self.repeats_min + 1)).long()  # (n,)
        r = torch.clamp(torch.minimum(r, T // L), min=2)  # (n,)
        start = (u[:, 2] * (T - r * L + 1).double()).long()  # (n,)
        rel = torch.arange(T)[None, :] - start[:, None]  # (n, T) position inside the repeats
        inside = (rel >= 0) & (rel < (r * L)[:, None]) & (u[:, 3] < self.p_repeat)[:, None]  # (n, T)
        seg = seg_all.gather(1, rel.clamp(min=0) % L[:, None])  # (n, T)
        toks = torch.where(inside, seg, toks)
        return Batch(tokens=toks)


class BatchStream:
    """The training batches of one seed, drawn :data:`DATA_CHUNK` steps at a time.

    Step ``s`` gets rows ``[(s % DATA_CHUNK) * B, ...)`` of one ``source.sample(DATA_CHUNK *
    B)`` call, the call for chunk ``s // DATA_CHUNK``; chunks are drawn from ``generator`` in
    order, so a seed's data order is a function of its generator's seed alone. Tokens are
    moved to ``device`` once per chunk. To resume at step ``s``, pass ``start=s`` and the
    generator in the state :meth:`resume_state` gave at ``s`` (the state before its chunk
    was drawn): the stream redraws that chunk and continues bit for bit.
    """

    def __init__(self, source, *, batch_size: int, generator: torch.Generator, start: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.source, self.batch_size, self.generator = source, batch_size, generator
        self.device = torch.device(device)
        self._chunk = -1
        self._tokens: Tensor | None = None  # (DATA_CHUNK, B, T) on device
        self._chunk_state: Tensor | None = None  # generator state before the current chunk
        self._next_chunk = start // DATA_CHUNK

    def resume_state(self, step: int) -> Tensor:
        """The generator state to checkpoint when ``step`` is the next step to run."""
        c = step // DATA_CHUNK
        if c == self._chunk:
            return self._chunk_state.clone()
        return self.generator.get_state()  # its chunk is not drawn yet

    def batch(self, step: int) -> Batch:
        """Step ``step``'s batch: tokens (B, T) on the stream's device."""
        c, i = divmod(step, DATA_CHUNK)
        if c != self._chunk:
            if c != self._next_chunk:
                raise ValueError(f"BatchStream: step {step} is in chunk {c}, but the generator "
                                 f"stands before chunk {self._next_chunk}; steps run in order")
            self._chunk_state = self.generator.get_state()
            drawn = self.source.sample(DATA_CHUNK * self.batch_size, generator=self.generator).tokens
            self._tokens = drawn.view(DATA_CHUNK, self.batch_size, -1).to(self.device)
            self._chunk, self._next_chunk = c, c + 1
        return Batch(tokens=self._tokens[i])


def _window_batch(data: Tensor, n: int, seq_len: int, generator: torch.Generator) -> Batch:
    """n random windows of length seq_len from a 1-D int64 tensor."""
    starts = torch.randint(0, data.numel() - seq_len + 1, (n,), generator=generator)
    idx = starts[:, None] + torch.arange(seq_len)[None, :]  # (n, T)
    return Batch(tokens=data[idx])


class TokenFileSource:
    """Random windows from a pre-tokenized little-endian uint16 file (``np.fromfile(path, '<u2')``).

    ``vocab_size`` defaults to max token + 1; a given one smaller than that is an error.
    """

    def __init__(self, path, *, seq_len: int, vocab_size: int | None = None):
        import numpy as np

        self.path = Path(path)
        _check_file(self.path)
        arr = np.fromfile(self.path, dtype="<u2")
        self.data = torch.from_numpy(arr.astype("int64"))
        _check_data(self.data, self.path, seq_len, vocab_size, unit="tokens")
        self.seq_len = seq_len
        top = int(self.data.max()) + 1
        self.vocab_size = top if vocab_size is None else vocab_size

    def sample(self, n: int, *, generator: torch.Generator) -> Batch:
        return _window_batch(self.data, n, self.seq_len, generator)


class TextFileSource:
    """Random windows from a text file as raw bytes (byte-level tokens, vocab 256)."""

    def __init__(self, path, *, seq_len: int, vocab_size: int | None = None):
        self.path = Path(path)
        _check_file(self.path)
        raw = self.path.read_bytes()
        self.data = torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.int64)
        _check_data(self.data, self.path, seq_len, vocab_size, unit="bytes")
        self.seq_len = seq_len
        self.vocab_size = 256 if vocab_size is None else vocab_size

    def sample(self, n: int, *, generator: torch.Generator) -> Batch:
        return _window_batch(self.data, n, self.seq_len, generator)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"{path}: data file not found; check the path in the spec (relative paths resolve from the working directory)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: data file is empty; point the spec at a file with at least seq_len + 1 tokens")


def _check_data(data: Tensor, path: Path, seq_len: int, vocab_size: int | None, *, unit: str) -> None:
    if seq_len < 2:
        raise ValueError(f"{path}: seq_len must be >= 2, got {seq_len}")
    if data.numel() < seq_len:
        raise ValueError(
            f"{path}: file holds {data.numel()} {unit}, shorter than seq_len {seq_len}; use a longer file or a smaller seq_len"
        )
    if vocab_size is not None:
        top = int(data.max())
        if top >= vocab_size:
            raise ValueError(
                f"{path}: token {top} >= vocab_size {vocab_size}; raise vocab_size to at least {top + 1} or leave it unset"
            )


# Probe prompts are drawn from generators seeded in a half of the seed space that training
# never uses. torch's CPU generator (mt19937) keeps only the low 32 bits of a seed
# (manual_seed(2**32 + s) == manual_seed(s)), so the split is inside 32 bits: training
# streams use family seeds in [0, 2**31), probe sets use PROBE_SEED_OFFSET + seed with
# PROBE_SEED_OFFSET = 2**31. The config must keep family seeds below 2**31.
PROBE_SEED_OFFSET = 2**31


def probe_set(source, *, n_prompts: int, seed: int) -> Tensor:
    """Held-out probe prompts: int64 [n_prompts, seq_len] from ``source.sample``.

    The generator is seeded with ``PROBE_SEED_OFFSET + seed`` (seed in [0, 2**31)), a seed
    no training stream (family seeds in [0, 2**31)) can have.
    """
    if not 0 <= seed < PROBE_SEED_OFFSET:
        raise ValueError(f"probe_set: seed must be in [0, 2**31), got {seed}")
    if n_prompts < 1:
        raise ValueError(f"probe_set: n_prompts must be >= 1, got {n_prompts}")
    g = torch.Generator().manual_seed(PROBE_SEED_OFFSET + seed)
    return source.sample(n_prompts, generator=g).tokens


def load_prompts_file(path, *, seq_len: int, vocab: int = 256) -> Tensor:
    """One prompt per line, byte-level (UTF-8 bytes), each truncated to ``seq_len``: int64 [P, seq_len].

    Blank lines are skipped; a line shorter than ``seq_len`` bytes is an error (prompts are
    never padded: padding would change every attention pattern).
    """
    path = Path(path)
    _check_file(path)
    rows = []
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        if len(line) < seq_len:
            raise ValueError(
                f"{path}:{lineno}: prompt is {len(line)} bytes, shorter than seq_len {seq_len}; "
                f"lengthen the line or lower seq_len (prompts are truncated, never padded)"
            )
        row = list(line[:seq_len])
        if max(row) >= vocab:
            raise ValueError(f"{path}:{lineno}: byte {max(row)} >= vocab {vocab}; use a vocab of 256 for byte-level prompts")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no prompts (every line is blank); write one prompt per line")
    return torch.tensor(rows, dtype=torch.int64)
