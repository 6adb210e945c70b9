"""Progress bars on the console, the same for the command line and the bundle's run: one bar for the cases and one,
under it, for the slices of the case being segmented. Bars appear only on a terminal; a redirected stderr (a log
file, a pipe) gets the log lines alone, without the bars' control characters.

Import-light (tqdm only, imported when a bar is made).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["bars_wanted", "case_bar", "SliceBar", "console_progress"]


def bars_wanted(quiet: bool = False) -> bool:
    """Whether to draw bars: not with ``quiet``, and only when stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


def case_bar(desc: str, quiet: bool = False, unit: str = "case") -> Callable[[Iterable], Iterable] | None:
    """A wrapper that draws a bar over an iterable (the cases, or batches), or ``None`` when no bar is wanted."""
    if not bars_wanted(quiet):
        return None
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, unit=unit, file=sys.stderr)


class SliceBar:
    """One progress bar for the slices of the case being segmented, under the bar of the cases. Its total, the
    case's slices with lung, is known before the first batch (``slice_progress`` is called with 0 done first)."""

    def __init__(self) -> None:
        self.bar = None
        self.case = None

    def __call__(self, case_id: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if case_id != self.case:
            self.close()
            self.case = case_id
            self.bar = tqdm(total=total, desc=f"  {case_id}", unit="slice", file=sys.stderr, leave=False, position=1)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None
        self.case = None


def console_progress(desc: str = "segment", quiet: bool = False) -> dict[str, Any]:
    """``progress`` and ``slice_progress`` for :meth:`CohortRunner.run
    <infnet_monai.pipeline.runner.CohortRunner.run>`: the command line's bars (both ``None`` when no bar is
    wanted). The bundle's ``run`` passes them as ``**infnet_monai.utils.progress.console_progress()``."""
    if not bars_wanted(quiet):
        return {"progress": None, "slice_progress": None}
    return {"progress": case_bar(desc, unit="case"), "slice_progress": SliceBar()}
