"""Progress of one run's meta-training: a live bar on a terminal, one line every minute or so
elsewhere (a log under ``nohup``, CI), or nothing."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Literal

from tqdm import tqdm

Mode = Literal["auto", "bar", "lines", "off"]


class Progress:
    """Reports ``step``/``loss``/last validation of a run against its budget.

    ``mode="auto"`` draws a bar when stderr is a terminal and writes lines otherwise;
    ``every_s`` is the interval between lines (the first comes after one interval).
    """

    def __init__(self, label: str, steps: int | None, seconds: float | None, mode: Mode = "auto",
                 every_s: float = 60.0, write: Callable[[str], None] | None = None) -> None:
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.label, self.steps, self.seconds, self.mode, self.every_s = label, steps, seconds, mode, every_s
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.started = self.last_line = time.perf_counter()
        self.validation: float | None = None
        self.origin: tuple[float, int, float] | None = None  # (time, step, budget used) of the first update
        self.bar = tqdm(total=steps, desc=label, leave=False, unit="step", dynamic_ncols=True) \
            if mode == "bar" else None

    def validated(self, value: float) -> None:
        self.validation = value

    def update(self, step: int, loss: float, budget_used_s: float) -> None:
        """After meta-training step ``step`` (1-based), ``budget_used_s`` seconds into the budget."""
        if self.bar is not None:
            self.bar.update()
            if step % 25 == 0:
                self.bar.set_postfix(loss=f"{loss:.4g}")
            return
        now = time.perf_counter()
        if self.origin is None:  # rates are measured from here: a resumed run starts past step 1
            self.origin = (now, step, budget_used_s)
        if self.mode != "lines" or now - self.last_line < self.every_s:
            return
        self.last_line = now
        elapsed = now - self.started
        since, steps_done, budget_done = now - self.origin[0], step - self.origin[1], budget_used_s - self.origin[2]
        left = []
        if self.steps and steps_done > 0:
            left.append(since / steps_done * (self.steps - step))
        if self.seconds and budget_done > 0:  # budget seconds left, in wall seconds at the rate seen so far
            left.append(max(0.0, self.seconds - budget_used_s) * since / budget_done)
        total = f"/{self.steps}" if self.steps else ""
        validation = "–" if self.validation is None else f"{self.validation:.4g}"
        eta = f", about {_duration(min(left))} left" if left and math.isfinite(min(left)) else ""
        self.write(f"{self.label}: step {step}{total}, loss {loss:.4g}, last validation {validation}, "
                   f"{_duration(elapsed)} elapsed{eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
