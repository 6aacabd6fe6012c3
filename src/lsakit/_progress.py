"""A progress bar over batches, shared by every stage that streams over a data loader."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any


@contextlib.contextmanager
def progress_bar(
    data: Iterable[Any], max_batches: int | None, enabled: bool, description: str
) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback; a transient rich bar over batches when enabled.

    The total is the loader's length (capped by ``max_batches``) when it has one.
    """
    if not enabled:
        yield lambda: None
        return
    from rich.progress import Progress

    total = len(data) if isinstance(data, Sized) else None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)
    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
