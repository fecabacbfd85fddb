"""examples/space/app.py in a real browser: the app runs as a user starts it (a subprocess on localhost), Playwright
drives Debian's Chromium (`apt-get install chromium`; no browser download), and the page shows the labels, the
Grad-CAM, the attention map (also for a clicked pixel), a segmentation overlay with its legend, and readable errors
for a non-image upload and a wrong model folder. Screenshots are saved in the test's tmp_path."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "space" / "app.py"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

missing = [name for name in ("gradio", "playwright") if importlib.util.find_spec(name) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(missing), reason=f"the browser test needs {missing} (pip install -e '.[app]' playwright)"),
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK), reason="the browser test needs Debian's Chromium (apt-get install chromium)"
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    """The app on the shipped digits model, started as `python examples/space/app.py --port N`."""
    port = free_port()
    log = tmp_path / "app.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, str(APP), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 300
        while "Running on local URL" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start (exit code {process.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_app(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.set_default_timeout(120_000)
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("#model-summary :text('PVT v2 image-classification')")
    return page


def loaded_image(page, element_id: str):
    """The size of the image shown in `#element_id`, once it has loaded."""
    image = page.locator(f"#{element_id} img").first
    image.wait_for(state="visible")
    page.wait_for_function(
        "id => { const i = document.querySelector(`#${id} img`); return i && i.complete && i.naturalWidth > 0; }",
        arg=element_id,
    )
    return image.evaluate("i => [i.naturalWidth, i.naturalHeight]")


def error_toast(page, text: str) -> str:
    toast = page.locator(".toast-body", has_text=text).first
    toast.wait_for(state="visible")
    return toast.inner_text()


def test_app_in_a_browser(app_url, browser, converted, tmp_path):
    from PIL import Image
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((320, 240)).save(photo)
    started = time.monotonic()

    page = open_app(browser, app_url)
    page.set_input_files("#image-upload input[type=file]", str(photo))
    # The classifier's labels (the digits model's classes are the digits), Grad-CAM and attention at the image's size
    page.wait_for_selector("#labels .output-class")
    labels = page.inner_text("#labels")
    assert any(digit in labels.split() for digit in "0123456789") and "%" in labels, labels
    assert loaded_image(page, "cam") == [320, 240]
    assert loaded_image(page, "attention") == [320, 240]
    assert "mean over all queries" in page.inner_text("#attention-caption")
    page.screenshot(path=tmp_path / "classifier.png", full_page=True)

    # A click on the image picks the query under it
    preview = page.locator("#preview img").first
    box = preview.bounding_box()
    preview.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.5})
    page.wait_for_selector("#attention-caption :text('the query at pixel')")
    caption = page.inner_text("#attention-caption")
    assert "(y=120, x=80)" in caption or "(y=119, x=80)" in caption or "x=79" in caption, caption
    page.screenshot(path=tmp_path / "clicked.png", full_page=True)

    # Another model from the page: a segmentation model converted from the official reference checkpoint
    segmenter = converted("pvt_v2_mini_seg")
    class_names = json.loads((Path(segmenter) / "config.json").read_text())["id2label"].values()
    page.fill("#model-box textarea", segmenter)
    page.click("#load-model")
    page.wait_for_selector("#model-summary :text('semantic-segmentation')")
    assert loaded_image(page, "overlay")[1] == 240  # the image's height; the legend panel widens it
    page.wait_for_selector("#legend :text('of the labelled pixels')")
    legend = page.inner_text("#legend")
    assert any(f"{name}: " in legend for name in class_names), legend
    assert loaded_image(page, "attention") == [320, 240]
    page.screenshot(path=tmp_path / "segmentation.png", full_page=True)

    # Errors are messages in the page: a non-image upload, a wrong model folder
    page = open_app(browser, app_url)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    page.set_input_files("#image-upload input[type=file]", str(notes))
    message = error_toast(page, "is not an image this app can read")
    assert "notes.txt" in message and "Traceback" not in page.content()
    page.screenshot(path=tmp_path / "not-an-image.png", full_page=True)
    page.fill("#model-box textarea", str(tmp_path / "no-such-model"))
    page.click("#load-model")
    message = error_toast(page, "Cannot load the model")
    assert "no-such-model" in message and "no such file or directory" in message
    page.screenshot(path=tmp_path / "wrong-model.png", full_page=True)
    print(f"browser session: {time.monotonic() - started:.1f} s; screenshots in {tmp_path}")
