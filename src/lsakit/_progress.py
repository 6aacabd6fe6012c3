"""Progress of the long stages, the one mechanism every command reports through.

Where stdout is an interactive terminal (or Jupyter) a transient rich bar shows each task. Where it
is not — a pipe, ``| tee``, nohup, a CI log — a bar would leave blank lines and say nothing, so
a plain line is printed instead, at most every ``LSAKIT_PROGRESS_INTERVAL`` seconds (default 10;
``0``: on every step, ``inf``: never)::

    LSA: 12/40 batches (30%), elapsed 1:02, ETA 2:25

The lines are rate-limited across the tasks of one :class:`Progress` (a training run's epochs
share one clock), so many short tasks print no more often than one long one. Rich's own
``TTY_INTERACTIVE=0`` gives the lines on a terminal too.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console

from lsakit.errors import ConfigError

#: The environment variable of the lines' minimum spacing in seconds.
INTERVAL_ENV = "LSAKIT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 10.0


def line_interval() -> float:
    """Seconds between two progress lines: ``$LSAKIT_PROGRESS_INTERVAL``, else 10."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0:
        raise ConfigError(
            f"{INTERVAL_ENV} must be a number of seconds ≥ 0 (or inf), got {text!r}; "
            "fix or unset it"
        )
    return value


def clock_text(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _Task:
    description: str
    total: int | None
    unit: str
    started: float
    done: int = 0
    note: str = ""

    def line(self, now: float) -> str:
        elapsed = now - self.started
        if self.total:
            text = (
                f"{self.description}: {self.done}/{self.total} {self.unit} "
                f"({100 * self.done / self.total:.0f}%), elapsed {clock_text(elapsed)}"
            )
            if 0 < self.done < self.total:
                remaining = elapsed / self.done * (self.total - self.done)
                text += f", ETA {clock_text(remaining)}"
        else:
            text = f"{self.description}: {self.done} {self.unit}, elapsed {clock_text(elapsed)}"
        return f"{text}, {self.note}" if self.note else text


class Progress:
    """Counted tasks: rich bars on a terminal, rate-limited plain lines elsewhere (module doc).

    Use as a context manager; ``add_task`` → ``advance`` … → ``remove_task``. Disabled, every
    call does nothing. ``interval`` (default :func:`line_interval`) and ``clock`` (seconds,
    monotonic) set the lines' pace; ``console`` is where everything goes (default: stdout).
    """

    def __init__(
        self,
        enabled: bool = True,
        *,
        console: Console | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self._console = console
        self._interval = line_interval() if enabled and interval is None else (interval or 0.0)
        self._clock = clock
        self._tasks: dict[int, _Task] = {}
        self._bars: Any = None  # a rich Progress on a terminal
        self._last = 0.0

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        # A console of its own, made now: whether stdout is a terminal is decided as the task
        # starts (rich fixes it when a console is made), and rich's TTY_INTERACTIVE is read.
        console = self._console or Console()
        self._console = console
        if console.is_interactive or console.is_jupyter:
            from rich import progress as rp

            self._bars = rp.Progress(
                rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                rp.TextColumn("{task.fields[note]}"), rp.TimeElapsedColumn(),
                rp.TimeRemainingColumn(), console=console, transient=True,
            )  # fmt: skip
            self._bars.start()
        self._last = self._clock()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None

    def add_task(self, description: str, total: int | None, unit: str = "batches") -> int:
        """A new task of ``total`` steps (None: unknown); returns its id."""
        if self._bars is not None:
            return int(self._bars.add_task(description, total=total, note=""))
        task = len(self._tasks)
        self._tasks[task] = _Task(description, total, unit, started=self._clock())
        return task

    def advance(self, task: int, steps: int = 1, note: str = "") -> None:
        """``steps`` more of ``task`` done; ``note`` (e.g. ``loss 0.41``) is shown beside."""
        if not self.enabled:
            return
        if self._bars is not None:
            self._bars.update(task, advance=steps, note=note)
            return
        state = self._tasks[task]
        state.done += steps
        state.note = note
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            assert self._console is not None
            self._console.print(
                state.line(now), markup=False, highlight=False, emoji=False, soft_wrap=True
            )

    def remove_task(self, task: int) -> None:
        """The task is finished: its bar disappears."""
        if self._bars is not None:
            self._bars.remove_task(task)
        else:
            self._tasks.pop(task, None)


@contextlib.contextmanager
def progress_bar(
    data: Iterable[Any], max_batches: int | None, enabled: bool, description: str
) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback over the batches of ``data``, reported by :class:`Progress`.

    The total is the loader's length (capped by ``max_batches``) when it has one.
    """
    total = len(data) if isinstance(data, Sized) else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    with Progress(enabled) as progress:
        task = progress.add_task(description, total)
        yield lambda: progress.advance(task)
