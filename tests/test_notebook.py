"""The exploration notebook runs headless from top to bottom (its own kernel and Spark session), on the
delta-spark engine: the engine users get from `make notebook` and the Docker jupyter service when the jars are
there. (Its delta-rs path is the same library code, which every other storage test runs on both engines.)"""

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
    os.environ["AA_NOTEBOOK_ENGINE"] = "delta-spark"
    try:
        NotebookClient(
            notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        ).execute()
    finally:
        os.environ.pop("AA_NOTEBOOK_LAKE", None)
        os.environ.pop("AA_NOTEBOOK_PERSONS", None)
        os.environ.pop("AA_NOTEBOOK_ENGINE", None)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "storage engine: delta-spark" in printed
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5, "audience sizes, overlap, route split, reasons and the stream's changes are plotted"
    assert "micro-batch streaming-20261129T001000Z-0:" in printed
