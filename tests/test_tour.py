"""tour.ipynb runs top to bottom: a copy is executed (nbclient, a fresh kernel, the repository root
as its working folder) with a 3-step training cell writing to a temporary folder, and any cell
that raises fails the test. The committed file keeps the outputs of a full run."""
import os

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tour_runs(tmp_path, monkeypatch):
    nb = nbformat.read(os.path.join(ROOT, "tour.ipynb"), as_version=4)
    assert nb.cells and all(c.cell_type in ("markdown", "code") for c in nb.cells)
    monkeypatch.setenv("TOUR_TRAIN_STEPS", "3")
    monkeypatch.setenv("TOUR_OUT", str(tmp_path / "runs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel beside pytest: no OpenMP oversubscription
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}})
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"tour.ipynb: a cell raised:\n{e}")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs) >= 8
    assert (tmp_path / "runs" / "tour" / "log.jsonl").exists()
