"""xraylib.app: the prediction page, driven in headless Chromium (selenium), plus its CLI verb and notebook cell."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraylib.cli import main
from xraylib.errors import InputError

pytest.importorskip("gradio", reason="needs the app extra: pip install 'xraylib[app]'")

# 64 px: ResNet-34's last block is a 2 x 2 grid, so the Grad-CAM overlay is not uniform
TINY = {"image_size": "64", "limit": "24", "batch_size": "8", "bootstrap": "20", "gradcam_images": "2", "epochs": "1"}
BROWSER_PACKAGES = "Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; `make test` "
BROWSER_PACKAGES += "installs them when run as root)"
SCREENSHOT_COPY = Path("/tmp/xraylib-app-screenshot.png")
WAIT = 120  # seconds a prediction may take on two busy cores


@pytest.fixture(scope="module")
def run_dir(synth_data, tmp_path_factory) -> Path:
    """A finished run as `xraylib train` leaves it (random weights, 1 epoch on a few synthetic images)."""
    from xraylib.config import resolve_config
    from xraylib.train import train

    cfg = resolve_config("resnet34", "smoke", {**TINY, "weights": "none"})
    return train(synth_data, cfg, tmp_path_factory.mktemp("runs") / "resnet34")


@pytest.fixture(scope="module")
def files(synth_data, tmp_path_factory) -> dict[str, Path]:
    """A synthetic radiograph, a second one, and a text file named bad.png."""
    synthetic = sorted(synth_data.rglob("test/*.jpeg"))
    bad = tmp_path_factory.mktemp("upload") / "bad.png"
    bad.write_text("not an image\n")
    return {"synthetic": synthetic[0], "other": synthetic[1], "bad": bad}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(run_dir):
    """The page of the run, served on 127.0.0.1 at a free port for the module; closed afterwards."""
    from xraylib.app import build_app, serve

    page = serve(build_app(run_dir), port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield page
    page.close()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through its own chromedriver (no Selenium Manager, so no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path, chromium = shutil.which("chromedriver"), shutil.which("chromium")
    if not driver_path or not chromium:
        pytest.skip(f"needs {BROWSER_PACKAGES}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
    ):
        options.add_argument(arg)
    for arg in ("--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


def _upload(browser, page, paths: list[Path]) -> tuple[str, dict[str, list[str]]]:
    """Open the page afresh, upload `paths` at once, wait for the result: the status text and the table's rows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.local_url)
    wait = WebDriverWait(browser, WAIT)
    field = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))
    field.send_keys("\n".join(str(p) for p in paths))
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), "images predicted"))
    rows = {}  # the table's grid by its ARIA roles: file -> [P(pneumonia), prediction]
    for row in browser.find_elements(By.CSS_SELECTOR, "#predictions [role=row]"):
        cells = [cell.text.strip() for cell in row.find_elements(By.CSS_SELECTOR, "[role=gridcell]")]
        if cells:
            rows[cells[0]] = cells[1:]
    return browser.find_element(By.ID, "status").text, rows


def _cli_rows(run_dir: Path, images: list[Path], capsys) -> dict[str, list[str]]:
    """File name -> [P(pneumonia), label] as `xraylib predict` prints them."""
    assert main(["predict", str(run_dir / "model.keras"), *map(str, images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {image.name: next(s for s in lines if s.startswith(image.name)).split()[1:] for image in images}


def test_real_radiograph_then_text_file(browser, server, run_dir, shared_data, files, capsys):
    real = sorted((shared_data / "samples" / "coronahack-test").glob("*.jp*g"))[0]
    status, rows = _upload(browser, server, [real])
    assert status.startswith("1 of 1 images predicted")
    assert rows[real.name] == _cli_rows(run_dir, [real], capsys)[real.name]  # P(pneumonia) to the digits shown

    status, rows = _upload(browser, server, [files["bad"]])
    assert status.startswith("0 of 1 images predicted")
    assert "bad.png could not be read: not an image file" in status
    assert rows["bad.png"][0] == "" and rows["bad.png"][1].startswith("error:")


def test_good_and_bad_file_in_one_upload_and_the_server_keeps_serving(browser, server, run_dir, files, capsys):
    expected = _cli_rows(run_dir, [files["synthetic"], files["other"]], capsys)
    status, rows = _upload(browser, server, [files["synthetic"], files["bad"]])
    assert status.startswith("1 of 2 images predicted") and "bad.png could not be read" in status
    assert rows[files["synthetic"].name] == expected[files["synthetic"].name]
    assert rows["bad.png"][1].startswith("error: not an image file")

    status, rows = _upload(browser, server, [files["other"]])  # the same server, after the error
    assert status.startswith("1 of 1 images predicted")
    assert rows[files["other"].name] == expected[files["other"].name]


def test_screenshot_shows_the_gradcam_overlay(browser, server, files, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    _upload(browser, server, [files["synthetic"], files["other"]])
    loaded = "return Array.from(document.querySelectorAll('#gradcam img')).map(i => i.complete ? i.naturalWidth : 0)"
    WebDriverWait(browser, WAIT).until(lambda b: all(b.execute_script(loaded)))
    sizes = browser.execute_script(loaded.replace("i.naturalWidth : 0", "[i.naturalWidth, i.naturalHeight] : 0"))
    assert len(sizes) == 2 and all(w > 1.5 * h > 0 for w, h in sizes)  # the radiograph and its overlay side by side
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.width >= 1000 and im.height >= 1000
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 20  # not a blank page
    # coloured pixels: the figures' colour bars and titles at least (the tiny model may find no evidence for its
    # call, and then the overlay is clear; a page without the figures has next to none)
    assert (np.ptp(pixels.astype(int), axis=2) > 100).mean() > 0.0005
    shutil.copy(shot, SCREENSHOT_COPY)


def test_predict_uploads_without_a_browser(server, run_dir, files):
    from xraylib.app import predict_uploads, status_text
    from xraylib.predict import load_predictor

    predictor = load_predictor(run_dir / "model.keras")
    table, figures, problems = predict_uploads(predictor, [files["bad"], files["synthetic"]])
    assert list(table["file"]) == ["bad.png", files["synthetic"].name]
    assert table.loc[0, "prediction"].startswith("error:") and 0 <= float(table.loc[1, "P(pneumonia)"]) <= 1
    assert len(figures) == 1 and figures[0][0].width > figures[0][0].height and files["synthetic"].name in figures[0][1]
    assert problems == ["bad.png could not be read: not an image file (unknown format)"]
    assert "**Error**: bad.png" in status_text(2, problems, 0.5)
    assert server.analytics_enabled is False


def test_light_import_and_help(capsys):
    code = "import sys, xraylib.app; assert not {'gradio', 'tensorflow'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(SystemExit) as info:
        main(["app", "--help"])
    assert info.value.code == 0 and "usage: xraylib app" in capsys.readouterr().out


def test_port_in_use_is_one_line(server):
    import gradio as gr

    from xraylib.app import serve

    port = int(server.local_url.rstrip("/").rsplit(":", 1)[1])
    with gr.Blocks(analytics_enabled=False) as other:
        gr.Markdown("another page")
    with pytest.raises(InputError, match=f"port {port}: cannot listen on 127.0.0.1"):
        serve(other, port=port, prevent_thread_lock=True, quiet=True)


def test_cli_refuses_what_is_not_a_finished_run(run_dir, tmp_path, capsys):
    shutil.copy(run_dir / "model.keras", tmp_path / "model.keras")  # a model without its metrics.json
    for argv, message in (
        (["app", str(tmp_path)], "not a finished run (no metrics.json)"),
        (["app", str(tmp_path / "nowhere")], "no such run folder"),
        (["app", str(run_dir), "--port", "70000"], "--port 70000"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("xraylib: error:") and message in err and "\n" not in err


def test_notebook_cell_is_skipped_by_the_sweep():
    from xraylib.runs import TRAIN_NOTEBOOK as notebook
    from xraylib.sweep import notebook_parameters

    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    parameters = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    assert "show_app = False" in "".join(parameters["source"])
    assert "show_app" not in notebook_parameters(Path("d"), "resnet34", "demo", {}, Path("r"))
    app_cells = ["".join(c["source"]) for c in cells if "launch_app" in "".join(c["source"])]
    assert len(app_cells) == 1 and app_cells[0].startswith("if show_app:")


def test_one_upload_of_a_good_jpeg_an_empty_file_and_a_tiff_predicts_the_jpeg_and_names_the_others(
    run_dir, files, tmp_path
):
    import gradio as gr
    from gradio.data_classes import FileData, ListFiles

    from xraylib.app import build_app

    (tmp_path / "empty.jpeg").write_bytes(b"")
    Image.new("L", (40, 40), 90).save(tmp_path / "scan.tiff")
    uploads = [files["synthetic"], tmp_path / "empty.jpeg", tmp_path / "scan.tiff"]
    page = build_app(run_dir)
    upload = next(block for block in page.blocks.values() if isinstance(block, gr.File))
    paths = upload.preprocess(ListFiles(root=[FileData(path=str(p)) for p in uploads]))  # Gradio's own check
    on_upload = next(fn.fn for fn in page.fns.values() if fn.fn is not None and fn.fn.__name__ == "on_upload")
    table, figures, status = on_upload(paths)
    assert list(table["file"]) == [p.name for p in uploads]
    assert 0 <= float(table.loc[0, "P(pneumonia)"]) <= 1 and len(figures) == 1
    assert status.startswith("1 of 3 images predicted")
    assert "empty.jpeg could not be read: the file is empty" in status
    assert "scan.tiff could not be read: TIFF is not a supported format" in status
