"""MkDocs hook: the committed figures under `reports/` are served with the site without being copied into `docs/`.

Pages link to a figure by its path in the repository, relative to the page (`../reports/demo-summary/x.png`), so the
same link works on GitHub and in a clone. MkDocs only serves files inside `docs_dir`, so this hook adds each PNG of the
committed figure folders to the site's files under that relative source path, written to `site/reports/...`: links
to them are then checked like any other (`mkdocs build --strict` fails on a missing figure).
"""

from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

FIGURE_FOLDERS = ("reports/demo-summary", "reports/real-summary")


def on_files(files: Files, config) -> Files:
    docs_dir = Path(config["docs_dir"])
    root = docs_dir.parent
    for folder in FIGURE_FOLDERS:
        for path in sorted((root / folder).rglob("*.png")):
            uri = path.relative_to(root).as_posix()
            files.append(
                File(
                    "../" + uri,
                    str(docs_dir),
                    config["site_dir"],
                    config["use_directory_urls"],
                    dest_uri=uri,
                    inclusion=InclusionLevel.INCLUDED,
                )
            )
    return files
