"""The documentation: the site builds in strict mode, every page is in its navigation, the README stays short."""

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_MAX_LINES = 220


def _nav_pages(node) -> set[str]:
    """Every page file named anywhere in mkdocs.yml's nav."""
    if isinstance(node, str):
        return {node}
    if isinstance(node, list):
        return set().union(*(_nav_pages(item) for item in node))
    if isinstance(node, dict):
        return set().union(*(_nav_pages(value) for value in node.values()))
    return set()


# `mkdocs build --strict`, in a process that then says whether building the API reference imported TensorFlow.
BUILD = """
import sys
from mkdocs.__main__ import cli
try:
    cli(["build", "--strict", "--site-dir", sys.argv[1]], standalone_mode=False)
finally:
    print("heavy imports:", sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def test_the_site_builds_in_strict_mode_without_a_warning_or_tensorflow(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's end-of-life notice, not a warning about the docs
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-c", BUILD, str(site)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "WARNING" not in log, log
    assert "heavy imports: []" in log, log  # mkdocstrings reads the source; it does not import the package
    page = site / "reference" / "training" / "index.html"
    assert "xraylib.config.RunConfig" in page.read_text()
    assert (site / "reports" / "demo-summary" / "roc_overlay.png").is_file(), "figures are served from reports/"


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    nav = _nav_pages(config["nav"])
    assert pages == nav, f"not in the nav: {sorted(pages - nav)}; in the nav but missing: {sorted(nav - pages)}"


def test_the_readme_is_short_and_its_links_into_docs_exist():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    links = re.findall(r"\]\(((?:docs|reports)/[^)#\s]*)", readme)
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_module_is_in_the_module_map_and_the_api_reference():
    modules = {p.stem for p in (ROOT / "xraylib").glob("*.py") if p.stem != "__init__"}
    development = (DOCS / "development.md").read_text()
    map_block = development[development.index("## Module map") :]
    listed = re.findall(r"^    ([a-z_]+) {2,}\S", map_block, flags=re.M)  # "    module   what it holds"
    mapped = set(listed)
    assert len(listed) == len(mapped), "a module is mapped twice"
    assert mapped <= modules, f"the module map names modules that do not exist: {sorted(mapped - modules)}"
    referenced = set()
    for page in (DOCS / "reference").glob("*.md"):
        referenced |= set(re.findall(r"^::: xraylib\.([a-z_]+)$", page.read_text(), flags=re.M))
    assert modules - mapped == set(), f"not in the module map: {sorted(modules - mapped)}"
    assert modules - referenced == set(), f"not in the API reference: {sorted(modules - referenced)}"
    assert referenced <= modules, f"the reference names modules that do not exist: {sorted(referenced - modules)}"
