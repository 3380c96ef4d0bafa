"""Figures without pyplot, saved reproducibly; shared by `uftdata inspect --plot` and `uft-train report`.

`matplotlib.figure.Figure` with an explicit Agg canvas instead of `pyplot`: no global registry of
open figures to leak between calls (or grow in a long-lived process), and no GUI backend picked up
from the environment. The PNG carries no "Software" text (the matplotlib version), and Agg has no
clock in it, so the same data gives the same bytes; its one text chunk (MARK) says uft drew it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uftdata.atomic import atomic_path

DPI = 100
PALETTE = "tab10"
# A constant tEXt chunk: a rerun may replace the PNGs uft drew, and nothing else. No version in it, so
# the same data still gives the same bytes.
MARK = {"uft": "drawn by uft"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_TEXT = 1 << 20


def new_figure(width: float, height: float) -> Figure:
    """An empty figure (inches) on an Agg canvas, laid out so titles and legends do not overlap."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def colors(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """A fixed color per name (in the given order), so a source or kind keeps its color across panels."""
    cmap = colormaps[PALETTE]
    return {name: tuple(cmap(i % cmap.N)) for i, name in enumerate(names)}


def no_data(ax: Axes, why: str) -> None:
    """Mark a panel that has nothing to show, saying why, instead of leaving it blank."""
    ax.text(0.5, 0.5, f"no data\n{why}", ha="center", va="center", transform=ax.transAxes, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def moving_mean(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to `window` values (shorter at the start), the same length as `values`."""
    sums = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=np.float64))])
    ends = np.arange(1, len(sums))
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def save_png(figure: Figure, path: Path) -> Path:
    """Write `figure` to `path` as PNG, atomically (a reader never sees half a file); returns `path`.
    An existing file is replaced only if it is a PNG uft drew (`drawn_by_uft`)."""
    path = Path(path)
    with atomic_path(path, owned=drawn_by_uft, fix="Move it away, or draw into another folder.") as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None, **MARK})
    return path


def drawn_by_uft(path: Path) -> bool:
    """A PNG whose text chunks, before the image data, hold MARK."""
    key, value = next(iter(MARK.items()))
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return False
            while header := f.read(8):
                length, kind = struct.unpack(">I4s", header)
                if kind in (b"IDAT", b"IEND") or length > _MAX_TEXT:
                    return False
                data = f.read(length)
                f.seek(4, 1)  # the chunk's CRC
                if kind == b"tEXt" and data == f"{key}\0{value}".encode("latin-1"):
                    return True
    except (OSError, struct.error):
        return False
    return False
