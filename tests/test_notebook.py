"""The exploration notebook runs headless from top to bottom (its own kernel and Spark session)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_run.ipynb"


def test_notebook_executes_without_errors(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["AA_NOTEBOOK_LAKE"] = str(tmp_path / "lake")
    os.environ["AA_NOTEBOOK_PERSONS"] = "150"
    try:
        NotebookClient(
            notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        ).execute()
    finally:
        os.environ.pop("AA_NOTEBOOK_LAKE", None)
        os.environ.pop("AA_NOTEBOOK_PERSONS", None)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, "audience sizes, overlap, route split and reasons are plotted"
