"""``birth report RUN_OR_OUT``: one self-contained HTML page per run or per reproduction output.

    collect.py   what the page shows, as one JSON payload (curves, attention over checkpoints,
                 config, summary, TransformerLens head scores; claims and figures of a reproduction)
    page.html    the page: inline CSS, the payload and page.js inlined at build time
    page.js      draws the charts (SVG) and the attention maps (canvas) with a checkpoint slider

The page loads nothing: no CDN, no file beside it; ``write_report`` returns its path.
"""
from __future__ import annotations

import json
from pathlib import Path

from birth.analysis.report.collect import collect

ASSETS = Path(__file__).parent


def render(payload: dict) -> str:
    """The HTML page of a payload, with the payload and the script inlined."""
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    page = (ASSETS / "page.html").read_text(encoding="utf-8")
    script = (ASSETS / "page.js").read_text(encoding="utf-8")
    return (page.replace("/*TITLE*/", payload["title"].replace("<", "&lt;"))
                .replace("/*DATA*/", data).replace("/*SCRIPT*/", script))


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Writes ``report.html`` into the run or reproduction directory ``path`` (or ``out``)."""
    payload = collect(Path(path))
    target = Path(out) if out else Path(path) / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(payload), encoding="utf-8")
    return target
