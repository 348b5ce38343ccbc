"""Export the run's charts: each as a PNG, and their data as CSV (a row per step, a column per rank or node)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cluster.atomic import write_atomic
from gui.series import RunSeries, Series

CHART_FILES = ("loss", "speed", "memory", "node_ram")


def table(columns: Mapping[str, Series]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every step any column has, and each column's value at those steps (NaN where it has none).

    A column with several values at one step (a node reports RAM more often than ranks step) keeps the last.
    """
    arrays = [series.x for series in columns.values() if len(series)]
    steps = np.unique(np.concatenate(arrays)) if arrays else np.empty(0)
    values: dict[str, np.ndarray] = {}
    for name, series in columns.items():
        column = np.full(steps.shape[0], np.nan)
        if len(series):
            # Assigned in order, so the last value of a repeated step wins.
            column[np.searchsorted(steps, series.x)] = series.y
        values[name] = column
    return steps, values


def _cell(value: float) -> str:
    if math.isnan(value):
        return ""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def csv_text(columns: Mapping[str, Series]) -> str:
    steps, values = table(columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", *columns])
    ordered = [values[name].tolist() for name in columns]
    for index, step in enumerate(steps.tolist()):
        writer.writerow([_cell(step), *(_cell(column[index]) for column in ordered)])
    return out.getvalue()


def chart_columns(series: RunSeries) -> dict[str, dict[str, Series]]:
    """The columns of each chart's CSV, named as a spreadsheet would want them."""
    ranks = sorted(series.ranks)
    loss = {f"rank {r} loss": series.ranks[r]["loss"] for r in ranks}
    loss["mean loss"] = series.loss_mean
    loss["validation loss"] = series.val_loss
    speed: dict[str, Series] = {}
    for r in ranks:
        speed[f"rank {r} step_time_s"] = series.ranks[r]["step_time_s"]
    for r in ranks:
        speed[f"rank {r} tokens_per_s"] = series.ranks[r]["tokens_per_s"]
    memory: dict[str, Series] = {}
    for r in ranks:
        memory[f"rank {r} mlx_active_bytes"] = series.ranks[r]["mlx_active_bytes"]
        memory[f"rank {r} mlx_peak_bytes"] = series.ranks[r]["mlx_peak_bytes"]
    node_ram = {f"{node} ram_used_bytes": values for node, values in series.node_ram.items()}
    return {"loss": loss, "speed": speed, "memory": memory, "node_ram": node_ram}


def write_csvs(series: RunSeries, folder: Path, prefix: str = "") -> list[Path]:
    """``loss.csv``, ``speed.csv``, ``memory.csv`` and ``node_ram.csv`` in ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, columns in chart_columns(series).items():
        path = folder / f"{prefix}{name}.csv"
        write_atomic(path, csv_text(columns))
        paths.append(path)
    return paths


def write_pngs(charts: Mapping[str, object], folder: Path, prefix: str = "") -> list[Path]:
    """Each chart widget (``grab()``-able: title, axes and curves as on screen) as ``<name>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, chart in charts.items():
        path = folder / f"{prefix}{name}.png"
        image = chart.grab()  # type: ignore[attr-defined] - any QWidget
        if not image.save(str(path), "PNG"):
            raise OSError(f"Could not write {path}; check that the folder is writable.")
        paths.append(path)
    return paths


__all__ = ["CHART_FILES", "chart_columns", "csv_text", "table", "write_csvs", "write_pngs"]
