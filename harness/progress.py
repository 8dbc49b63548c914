"""Training progress for people: a tqdm bar on a terminal, plain lines in logs, or nothing.

``"bar"`` draws a tqdm bar per seed (or packed chunk of seeds); ``"lines"`` writes one plain
line (family, seeds, step/total, loss, tokens/s) about every 10 % of the steps and never a
carriage return, so CI logs and files stay readable; ``"auto"`` is a bar when the stream is
a terminal, else lines; ``"off"`` says nothing.
"""

from __future__ import annotations

import sys
from typing import IO, Any

PROGRESS_MODES = ("auto", "bar", "lines", "off")


def resolve_progress(progress: str | bool | None, stream: IO[str] | None = None) -> str:
    """``"bar"``, ``"lines"`` or ``"off"`` for ``progress`` (one of :data:`PROGRESS_MODES`,
    or the older booleans: True is ``"auto"``, False and None are ``"off"``) on ``stream``
    (default ``sys.stderr``)."""
    if progress is True:
        progress = "auto"
    if progress is False or progress is None:
        progress = "off"
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress: expected one of {', '.join(PROGRESS_MODES)} (or True/False), "
                         f"got {progress!r}")
    if progress != "auto":
        return progress
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "bar" if callable(isatty) and isatty() else "lines"


def seeds_label(seeds: tuple[int, ...] | list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ",".join(str(s) for s in seeds)


class Progress:
    """One seed's (or one packed chunk's) progress in ``mode`` (``bar``, ``lines``, ``off``);
    :meth:`update` takes the step count done, the latest loss and tokens/s."""

    def __init__(self, mode: str, *, family: str, seeds: tuple[int, ...], total: int, initial: int = 0,
                 stream: IO[str] | None = None) -> None:
        self.mode, self.total, self.done = mode, total, initial
        self.label = f"{family} {seeds_label(seeds)}"
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._next_line = self._next_mark(initial)
        if mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=self.label, unit="step", leave=True,
                             dynamic_ncols=True, file=self.stream)

    def _next_mark(self, done: int) -> int:
        # the next multiple of ~10 % of the steps after `done`
        tenth = max(1, self.total // 10)
        return min(self.total, (done // tenth + 1) * tenth)

    def update(self, done: int, loss: float, tokens_per_s: float) -> None:
        if self._bar is not None:
            self._bar.update(done - self.done)
            self._bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
        elif self.mode == "lines" and done >= self._next_line:
            self.stream.write(f"{self.label}: step {done}/{self.total} loss {loss:.3f} "
                              f"{tokens_per_s:,.0f} tok/s\n")
            self.stream.flush()
            self._next_line = self._next_mark(done)
        self.done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
