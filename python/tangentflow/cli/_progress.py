"""A progress bar over named stages, shared by ``tangentflow demo`` and ``bench``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """A progress bar over named stages: tqdm when installed, else a text bar on stderr.

    ``with progress("kernels"): ...`` shows the stage while it runs and advances the bar
    when it ends. ``enabled=False`` prints nothing.
    """

    def __init__(
        self, total: int, desc: str = "", *, enabled: bool = True, file: TextIO | None = None
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.done = 0
        self.enabled = enabled
        self.file: TextIO = file if file is not None else sys.stderr
        self._bar: Any = None  # a tqdm bar (tqdm ships no type information)
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=self.total, desc=desc, file=self.file, leave=False, unit="step"
                )

    def _draw(self, label: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(label, refresh=True)
            return
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = f"\r{self.desc} [{bar}] {self.done}/{self.total} {label}"
        self.file.write(f"{line:<79}")
        self.file.flush()

    @contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        self._draw(label + " ...")
        yield
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        self._draw(label)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self.file.write("\r" + " " * 79 + "\r")
            self.file.flush()
