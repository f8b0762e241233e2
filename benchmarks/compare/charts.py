"""The two pictures: time to first query and disk per copy, against database size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, NullFormatter

MARKERS = "os^vDP*X"
# A copy that added nothing would vanish from a log axis: draw it at 4 KiB.
DISK_FLOOR = 4096


def human_bytes(value: float, _pos: object = None) -> str:
    """Decimal units, so log-axis ticks at powers of ten read 1 MB, 10 MB, 100 MB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return str(value)


def series(result: dict[str, Any], key: str, metric: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for size in result["sizes"]:
        entry = size["methods"].get(key)
        if entry is None:
            continue
        xs.append(float(size["database_bytes"]))
        ys.append(float(entry["seconds"][metric]) if metric in ("p50", "p95")
                  else max(float(entry[metric]), DISK_FLOOR))
    return xs, ys


def _size_ticks(ax: Any, result: dict[str, Any]) -> None:
    """One labelled tick per measured size, so a short range still reads as sizes."""
    sizes = [float(s["database_bytes"]) for s in result["sizes"]]
    ax.set_xticks(sizes, [f"{s['label']}\n({human_bytes(b)}, n={s.get('copies', '?')})"
                          for s, b in zip(result["sizes"], sizes, strict=True)])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _axes(title: str, ylabel: str) -> tuple[Any, Any]:
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("database size (pg_database_size, pgbench data)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    return fig, ax


def time_chart(result: dict[str, Any], path: Path, subtitle: str) -> None:
    fig, ax = _axes(f"Time to first query of a copy (p50, bar to p95)\n{subtitle}", "seconds")
    for i, (key, label) in enumerate(result["methods"].items()):
        xs, p50 = series(result, key, "p50")
        _, p95 = series(result, key, "p95")
        errors = [[0.0] * len(p50), [b - a for a, b in zip(p50, p95, strict=True)]]
        ax.errorbar(xs, p50, yerr=errors, marker=MARKERS[i % len(MARKERS)], capsize=3,
                    label=label)
    _size_ticks(ax, result)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def disk_chart(result: dict[str, Any], path: Path, subtitle: str) -> None:
    fig, ax = _axes(f"Disk added per copy (median pool `used` growth)\n{subtitle}", "bytes")
    ax.yaxis.set_major_formatter(FuncFormatter(human_bytes))
    for i, (key, label) in enumerate(result["methods"].items()):
        xs, ys = series(result, key, "bytes_added_median")
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], label=label)
    _size_ticks(ax, result)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
