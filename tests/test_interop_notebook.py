"""docs/quickstart.ipynb executes from top to bottom (its cells assert what they show)."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra is not installed: pip install -e '.[all]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra is not installed: pip install -e '.[all]'")
pytest.importorskip("transformer_lens",
                    reason="the notebook exports to TransformerLens, not installed: pip install -e '.[all]'")

from trained_runs import artifact_dir  # noqa: E402

pytestmark = pytest.mark.slow  # trains, or starts a subprocess, browser or Slurm

NOTEBOOK = Path(__file__).parent.parent / "docs" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRTH_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "max |Δlogit|" in text and "induction score per layer" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2 and (tmp_path / "quick" / "metrics.jsonl").exists()
    nbformat.write(nb, artifact_dir() / "quickstart.executed.ipynb")
