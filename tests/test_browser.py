"""The app in a real headless Chromium: drag an X-ray in, analyse, read the verdict.

Needs Playwright (Python) and a Chromium binary (Debian: `apt-get install
chromium`; never `playwright install`). Skips without them, fails under CI=true.
"""

import base64
import hashlib
import importlib.util
import io
import os
import shutil
from pathlib import Path

import pytest

from tests.app_server import running_app
from tests.conftest import require, synthetic_xray

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
TIMEOUT_MS = 120_000  # a prediction on a busy 2-core machine


@pytest.fixture(scope="module")
def browser():
    require(importlib.util.find_spec("playwright") is not None, "Playwright (Python) is not installed")
    require(Path(CHROMIUM).is_file(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(browser, tiny_run, tmp_path_factory):
    with running_app(tiny_run, tmp_path_factory.mktemp("app")) as app:
        yield app


@pytest.fixture
def page(browser, app):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url)
    yield page
    page.close()


def xray_file(shared_data):
    """(bytes, name, MIME type) of a real X-ray (the shared_data fixture: no silent synthetic stand-in)."""
    path = sorted((shared_data / "val" / "PNEUMONIA").glob("*.jpeg"))[0]
    return path.read_bytes(), "xray.jpeg", "image/jpeg"


def drag_and_drop(page, data, name, mime):
    """A real drop: a DataTransfer holding a File, through dragenter, dragover, drop."""
    zone = page.get_by_role("button", name="Drop an image file here to upload")
    transfer = page.evaluate_handle(
        """([b64, name, type]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type}));
            return transfer;
        }""",
        [base64.b64encode(data).decode(), name, mime])
    for event in ("dragenter", "dragover", "drop"):
        zone.dispatch_event(event, {"dataTransfer": transfer})
    page.locator("#xray img").wait_for()  # the preview: the upload has reached the server


def error_toast(page):
    toast = page.get_by_test_id("toast-body").last
    toast.wait_for()
    return toast.inner_text()


def test_drop_an_xray_and_read_the_verdict(page, tiny_run, shared_data, tmp_path):
    sha256 = hashlib.sha256((tiny_run / "model.keras").read_bytes()).hexdigest()
    assert sha256[:12] in page.locator("#model").inner_text()
    drag_and_drop(page, *xray_file(shared_data))
    page.get_by_role("button", name="Analyse").click()
    verdict = page.locator('#verdict [data-testid="label-output-value"]')
    verdict.wait_for()
    assert verdict.inner_text().strip() in ("NORMAL", "PNEUMONIA")
    for name in ("PNEUMONIA", "NORMAL"):
        assert page.locator(f'#verdict [data-testid="{name}-confidence-set"]').inner_text().strip().endswith("%")
    for name in ("NORMAL", "BACTERIAL", "VIRAL"):
        assert page.locator(f'#breakdown [data-testid="{name}-confidence-set"]').is_visible()
    heatmap = page.locator("#heatmap img")
    heatmap.wait_for()
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0", heatmap.element_handle())
    assert "estimate" in page.locator("#notes").inner_text()
    assert "not a diagnosis" in page.content()
    page.screenshot(path=tmp_path / "app.png", full_page=True)
    assert (tmp_path / "app.png").stat().st_size > 10_000

    # The upload was deleted after the analysis: analysing it again asks for it again.
    page.get_by_role("button", name="Analyse").click()
    assert "upload the image again" in error_toast(page)


def test_a_bad_image_is_explained(page):
    buffer = io.BytesIO()
    synthetic_xray("normal", seed=4, size=40).save(buffer, "PNG")
    drag_and_drop(page, buffer.getvalue(), "small.png", "image/png")
    page.get_by_role("button", name="Analyse").click()
    assert "40 x 40 pixels" in error_toast(page)




def test_examples_can_be_analysed_again_and_again(page):
    """An example is not an upload: its copy stays for the next click, unlike uploads."""
    verdict = page.locator('#verdict [data-testid="label-output-value"]')
    for label in ("Child bacterial pneumonia", "Child normal", "Child bacterial pneumonia"):
        page.get_by_text(label, exact=True).click()
        page.locator("#xray img").wait_for()
        verdict.wait_for(state="detached")  # a new image clears the last answer
        page.get_by_role("button", name="Analyse").click()
        verdict.wait_for()
        assert verdict.inner_text().strip() in ("NORMAL", "PNEUMONIA")
    assert page.get_by_text("Adult", exact=True).is_visible()
    assert not page.get_by_test_id("toast-body").count()
