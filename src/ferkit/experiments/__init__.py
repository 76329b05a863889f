"""Experiment grids: the study's rows run leak-free (official protocol) and, for resampling, the study's way.

``run_grid(name, data, out, budget=...)`` runs what is unfinished and writes ``results.md``/``results.json``;
``load_grid(name)`` reads a grid (shipped: ``study``); ``write_table(out)`` rebuilds the table.
"""

from ferkit.experiments.grid import Grid, Row, list_grids, load_grid
from ferkit.experiments.runner import run_grid
from ferkit.experiments.table import render_markdown, write_table

__all__ = ["Grid", "Row", "list_grids", "load_grid", "render_markdown", "run_grid", "write_table"]
