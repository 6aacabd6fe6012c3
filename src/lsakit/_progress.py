"""Progress of the long stages, the one mechanism every command reports through.

Where stdout is an interactive terminal a transient rich bar shows each task. Where it is not — a
pipe, ``| tee``, nohup, a CI log — a bar would leave blank lines and say nothing, so a plain line
is printed instead, at most every ``LSAKIT_PROGRESS_INTERVAL`` seconds (default 10; ``0``: on
every step, ``inf``: never)::

    LSA: 12/40 batches (30%), elapsed 1:02, ETA 2:25

The lines are rate-limited across the tasks of one :class:`Progress` (a training run's epochs
share one clock), so many short tasks print no more often than one long one. Rich's own
``TTY_INTERACTIVE=0`` gives the lines on a terminal too.

In a Jupyter notebook (detected as rich detects it) each :class:`Progress` is one output of the
cell, updated in place (IPython's ``display(…, display_id=True)``) at most every
:data:`NOTEBOOK_REFRESH` seconds: a line per task, as HTML (an HTML ``<progress>`` bar beside the
line above) and as plain text, without ipywidgets and without terminal escape codes. A finished
task keeps its line, ending in ``done`` (or ``stopped`` when it ended short of its total or by an
error), so a saved notebook shows what ran rather than a half-drawn bar.
"""

from __future__ import annotations

import contextlib
import html
import importlib
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
#: Minimum seconds between two updates of a notebook's progress output (4 a second at most).
NOTEBOOK_REFRESH = 0.25


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
    #: when the task ended (None: running) and how: "done" or "stopped"
    ended: float | None = None
    outcome: str = ""

    def line(self, now: float) -> str:
        elapsed = (now if self.ended is None else self.ended) - self.started
        if self.total:
            text = (
                f"{self.description}: {self.done}/{self.total} {self.unit} "
                f"({100 * self.done / self.total:.0f}%), elapsed {clock_text(elapsed)}"
            )
            if 0 < self.done < self.total and self.ended is None:
                remaining = elapsed / self.done * (self.total - self.done)
                text += f", ETA {clock_text(remaining)}"
        else:
            text = f"{self.description}: {self.done} {self.unit}, elapsed {clock_text(elapsed)}"
        text = f"{text}, {self.note}" if self.note else text
        return f"{text}, {self.outcome}" if self.ended is not None else text

    def end(self, now: float, failed: bool = False) -> None:
        """The task is over: ``done``, or ``stopped`` when it fell short of its total or failed."""
        if self.ended is None:
            self.ended = now
            short = self.total is not None and self.done < self.total
            self.outcome = "stopped" if failed or short else "done"

    def html(self, now: float) -> str:
        """The task's line in HTML: an HTML ``<progress>`` bar before it while it runs."""
        text = f"<code>{html.escape(self.line(now))}</code>"
        if self.ended is not None:
            return f"<div>{text}</div>"
        value = f'value="{self.done}" max="{self.total}" ' if self.total else ""
        bar = f'<progress {value}style="width: 16em; vertical-align: middle"></progress>'
        return f"<div>{bar} {text}</div>"


def notebook_output(tasks: Iterable[_Task], now: float) -> dict[str, str]:
    """The display data of a notebook's progress output: the tasks' lines as HTML and as text.

    Args:
        tasks: the tasks shown, in the order they were added.
        now: the clock's time (seconds) the running tasks' elapsed time is counted to.

    Returns:
        ``{"text/html": …, "text/plain": …}``, one line per task in each.
    """
    shown = list(tasks)
    return {
        "text/html": '<div class="lsakit-progress">'
        + "".join(task.html(now) for task in shown)
        + "</div>",
        "text/plain": "\n".join(task.line(now) for task in shown),
    }


class _NotebookOutput:
    """One output of a notebook cell, shown on the first :meth:`show` and updated in place."""

    def __init__(self) -> None:
        self._display: Any = importlib.import_module("IPython.display").display
        self._handle: Any = None

    def show(self, data: dict[str, str]) -> None:
        if self._handle is None:
            self._handle = self._display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)


class Progress:
    """Counted tasks: rich bars on a terminal, one output updated in place in a notebook,
    rate-limited plain lines elsewhere (module doc).

    Use as a context manager; ``add_task`` → ``advance`` … → ``remove_task``. Disabled, every
    call does nothing. ``interval`` (default :func:`line_interval`) and ``clock`` (seconds,
    monotonic) set the lines' pace (the clock the notebook output's too); ``console`` is where
    everything goes (default: stdout), and whether it is a notebook's (``console.is_jupyter``).
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
        self._count = 0  # the tasks added so far: the next task's id
        self._bars: Any = None  # a rich Progress on a terminal
        self._notebook: _NotebookOutput | None = None  # the output in a notebook
        self._last = 0.0

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        # A console of its own, made now: whether stdout is a terminal is decided as the task
        # starts (rich fixes it when a console is made), and rich's TTY_INTERACTIVE is read.
        console = self._console or Console()
        self._console = console
        if console.is_jupyter:
            self._notebook = _NotebookOutput()
        elif console.is_interactive:
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
        if self._notebook is not None:
            now = self._clock()
            for state in self._tasks.values():
                state.end(now, failed=kind is not None)
            if self._tasks:  # every task's last line, whatever the pace
                self._notebook.show(notebook_output(self._tasks.values(), now))
            self._notebook = None

    def add_task(self, description: str, total: int | None, unit: str = "batches") -> int:
        """A new task of ``total`` steps (None: unknown).

        Args:
            description: what the task is (the start of its line).
            total: its number of steps, or None where unknown.
            unit: what a step is, in the plural (``batches``, ``steps``, ``runs``).

        Returns:
            The task's id, for :meth:`advance` and :meth:`remove_task`.
        """
        if self._bars is not None:
            return int(self._bars.add_task(description, total=total, note=""))
        task = self._count
        self._count += 1
        self._tasks[task] = _Task(description, total, unit, started=self._clock())
        if self._notebook is not None:
            self._show(first=len(self._tasks) == 1)
        return task

    def advance(self, task: int, steps: int = 1, note: str = "") -> None:
        """Count ``steps`` more of ``task`` done.

        Args:
            task: the id :meth:`add_task` returned.
            steps: how many steps were done.
            note: shown beside the count (e.g. ``loss 0.41``); it replaces the previous note.
        """
        if not self.enabled:
            return
        if self._bars is not None:
            self._bars.update(task, advance=steps, note=note)
            return
        state = self._tasks[task]
        state.done += steps
        state.note = note
        if self._notebook is not None:
            self._show()
            return
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            assert self._console is not None
            self._console.print(
                state.line(now), markup=False, highlight=False, emoji=False, soft_wrap=True
            )

    def remove_task(self, task: int) -> None:
        """The task is finished: its bar disappears (in a notebook its line stays, ``done``).

        Args:
            task: the id :meth:`add_task` returned.
        """
        if self._bars is not None:
            self._bars.remove_task(task)
        elif self._notebook is not None:
            self._tasks[task].end(self._clock())
            self._show()
        else:
            self._tasks.pop(task, None)

    def _show(self, first: bool = False) -> None:
        """Update the notebook's output: on the first task at once, else at most every
        :data:`NOTEBOOK_REFRESH` seconds (``__exit__`` shows the last state in any case)."""
        assert self._notebook is not None
        now = self._clock()
        if first or now - self._last >= NOTEBOOK_REFRESH:
            self._last = now
            self._notebook.show(notebook_output(self._tasks.values(), now))


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
