"""What the run was on, and the summary table."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.compare.charts import human_bytes


def _first(path: str, prefix: str) -> str:
    for line in Path(path).read_text().splitlines():
        if line.startswith(prefix):
            return line.split(":", 1)[1].strip()
    return ""


def _out(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def machine(work: Path) -> dict[str, Any]:
    mem_kb = int(_first("/proc/meminfo", "MemTotal").split()[0])
    dialect = _out("scripts/start-zfs", "--dialect")
    zfs_fuse = _out("dpkg-query", "-W", "-f", "${Version}", "zfs-fuse")
    backing = _out("findmnt", "-n", "-o", "FSTYPE", "-T", str(work))
    return {
        "host": platform.node(), "kernel": platform.release(),
        "cpu": _first("/proc/cpuinfo", "model name"), "cores": os.cpu_count(),
        "memory_bytes": mem_kb * 1024,
        "filesystem": f"{dialect} {zfs_fuse if dialect == 'zfs-fuse' else ''}".strip()
        + f", pool version 23, one file-backed vdev on {backing}",
        "load_average_at_start": list(os.getloadavg()),
    }


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per size and method."""
    rows = ["| size (pgbench scale, actual) | method | n | p50 s | p95 s | disk added |",
            "|---|---|---:|---:|---:|---:|"]
    for size in result["sizes"]:
        head = (f"{size['label']} (s={size['pgbench_scale']}, "
                f"{human_bytes(size['database_bytes'])})")
        for key, entry in size["methods"].items():
            secs = entry["seconds"]
            label = result["methods"][key].replace("|", "\\|")  # a pipe ends a cell
            rows.append(f"| {head} | {label} | {secs['n']} | "
                        f"{secs['p50']:.3f} | {secs['p95']:.3f} | "
                        f"{human_bytes(entry['bytes_added_median'])} |")
    return "\n".join(rows) + "\n"


def density_lines(density: dict[str, Any] | None) -> str:
    if not density:
        return ""
    at_n = density["branch_ready_at_n_seconds"] or {}
    return (
        f"\nDensity ({density['size_class']} branches, idle): "
        f"{density['branches_running']} running ({density['stopped_because']}); "
        f"memory per branch {human_bytes(density['memory_per_branch_pss_bytes'])} PSS, "
        f"{human_bytes(density['memory_per_branch_memavailable_bytes'])} of MemAvailable; "
        f"extrapolated maximum {density['extrapolated_max_branches']} "
        f"({density['extrapolated_max_branches_keeping_reserve']} keeping "
        f"{density['reserve_bytes'] / 2**30:.0f} GiB free); branch ready with "
        f"{density['branches_running']} running: p50 {at_n.get('p50', 0):.3f} s, "
        f"p95 {at_n.get('p95', 0):.3f} s (n={at_n.get('n', 0)}).\n")
