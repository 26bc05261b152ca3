"""Executing a notebook headless (papermill, one kernel per notebook) and rendering it as HTML, with an index page.

The kernel is started with `IPKernelApp.capture_fd_output=False`: what C libraries write to file descriptors 1
and 2 (TensorFlow's start-up and CUDA lines) goes to the kernel's own stderr, which the caller points at a log
file, and not into the notebook. Python's own output, warnings and tracebacks still show in the notebook.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from xraylib.fileio import write_text
from xraylib.runs import notebook_path

QUIET_KERNEL = ["--IPKernelApp.capture_fd_output=False"]


def execute(source: str | Path, output: str | Path, parameters: dict, cwd: str | Path, log=None) -> Path:
    """Run `source` with papermill into `output` (then rendered beside it as .html); `log`: a text stream for the
    cell outputs as they come. Raises papermill's errors; the partial notebook and its HTML are kept."""
    import papermill

    output = Path(output)
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            log_output=log is not None,
            stdout_file=log,
            stderr_file=log,
            cwd=str(cwd),
            extra_arguments=QUIET_KERNEL,
        )
    finally:
        if output.is_file():
            write_html(output)
    return output


def write_html(notebook: str | Path) -> Path:
    """Render an executed notebook as a standalone HTML page beside it (figures embedded)."""
    import nbconvert
    import nbformat

    notebook = Path(notebook)
    body, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(notebook, as_version=4))
    path = notebook.with_suffix(".html")
    write_text(path, body)
    return path


def write_index(report_dir: str | Path, statuses: dict[str, dict], title: str) -> Path:
    """REPORT_DIR/index.html: links to the report's own pages, then one row per run with its status and page."""
    report_dir = Path(report_dir)

    def link(page: Path) -> str:
        href = html.escape(os.path.relpath(page, report_dir).replace(os.sep, "/"))
        return f'<a href="{href}">{href}</a>'

    pages = [f"<li>{link(p)}</li>" for p in sorted(report_dir.glob("*.html")) if p.name != "index.html"]
    rows = []
    for run, status in statuses.items():
        page = notebook_path(report_dir / run).with_suffix(".html")
        cells = [
            html.escape(run),
            html.escape(str(status.get("status", "not started"))),
            html.escape(str(status.get("seconds", ""))),
            link(page) if page.is_file() else "",
            html.escape(str(status.get("error", ""))),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in ("run", "status", "seconds", "notebook", "error"))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1><ul>{''.join(pages)}</ul>"
        f"<table border='1' cellpadding='4'><tr>{header}</tr>\n" + "\n".join(rows) + "\n</table></body></html>\n"
    )
    path = report_dir / "index.html"
    write_text(path, page)
    return path
