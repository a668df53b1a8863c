"""The app in a real headless Chromium: every kind of answer, as a user sees it.

The app serves the bundled model, so that the answers are the real ones (a
verdict, no verdict and why, a photo of a film); what the page must show for a
file is what `pneumo.analysis.analyse` answers for the same file in process.
Any error in the page (an uncaught exception, a console error) fails the test
that caused it, and axe-core checks the page's accessibility.

Needs Playwright (Python) and a Chromium binary (Debian: `apt-get install
chromium`; never `playwright install`), and axe-core, which the PyPI package
axe-playwright-python ships. Skips without them, fails under CI=true.
"""

import base64
import importlib.util
import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.analysis import analyse
from pneumo.model.loading import BUNDLED_DIR, load_model
from pneumo.checks.scope import OK
from tests.app_server import running_app
from tests.conftest import ROOT, require, require_import

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]
TIMEOUT_MS = 120_000  # a prediction on a busy 2-core machine
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}  # an iPhone 12 to 15's viewport in CSS pixels
EXAMPLES = {"Child normal": "child-normal", "Child bacterial pneumonia": "child-bacterial-pneumonia",
            "Child viral pneumonia": "child-viral-pneumonia", "Adult": "adult"}
ANSWERED = re.compile(r"Why:|probability of pneumonia")  # the notes of an answer, with or without a verdict
MIME = {".png": "image/png", ".jpeg": "image/jpeg", ".jpg": "image/jpeg"}


def example(name) -> Path:
    return ROOT / "examples" / f"{name}.jpeg"


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
def model():
    """The bundled model in this process: what the page must show for a file."""
    return load_model(BUNDLED_DIR)


@pytest.fixture(scope="module")
def app(browser, tmp_path_factory):
    with running_app(BUNDLED_DIR, tmp_path_factory.mktemp("app")) as app:
        yield app


def open_page(browser, url, viewport=None):
    """A page on the app, and the list its errors go to: uncaught exceptions and console errors."""
    page = browser.new_page(viewport=viewport or LAPTOP)
    errors = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("console", lambda message: message.type == "error" and errors.append(f"console: {message.text}"))
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("button", name="Analyse").wait_for()
    return page, errors


@pytest.fixture
def open_app(browser, app):
    """Opens pages on the app (open_app(viewport=PHONE)); the test fails on any error in any of them."""
    opened = []

    def opener(viewport=None):
        opened.append(open_page(browser, app.url, viewport))
        return opened[-1][0]

    yield opener
    errors = [error for page, errors in opened for error in errors]
    for page, _ in opened:
        page.close()
    assert not errors, "errors in the page:\n" + "\n".join(errors)


@pytest.fixture
def page(open_app):
    return open_app()


# --- what a user does ----------------------------------------------------------------------------------


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
    answer_cleared(page)


def drop_file(page, path: Path):
    """Named unlike the examples: Gradio keeps one copy of byte-identical files of one name, and the app
    keeps its examples' copies, where an upload is deleted once analysed."""
    drag_and_drop(page, path.read_bytes(), "upload" + path.suffix.lower(), MIME[path.suffix.lower()])


def clear_image(page):
    page.locator("#xray").get_by_role("button", name="Remove Image").click()
    page.get_by_role("button", name="Drop an image file here to upload").wait_for()


def click_example(page, label):
    page.get_by_text(label, exact=True).click()
    page.locator("#xray img").wait_for()
    answer_cleared(page)


def answer_cleared(page):
    """A new image empties the last answer (a quick event of its own): wait for it, so that the
    answer read next is the new one."""
    from playwright.sync_api import expect

    expect(page.locator("#notes")).not_to_contain_text(ANSWERED, timeout=TIMEOUT_MS)


def analyse_now(page):
    page.get_by_role("button", name="Analyse").click()
    wait_for_answer(page)


def wait_for_answer(page):
    from playwright.sync_api import expect

    expect(page.locator("#notes")).to_contain_text(ANSWERED, timeout=TIMEOUT_MS)
    page.wait_for_timeout(400)  # the bars' and the image's transitions, for screenshots


def error_toast(page):
    toast = page.get_by_test_id("toast-body").last
    toast.wait_for()
    return toast.inner_text()


# --- what a user sees ---------------------------------------------------------------------------------


def shown(page):
    """The answer as text, as the page shows it."""
    def text(selector):
        found = page.locator(selector)
        return found.inner_text().strip() if found.count() and found.first.is_visible() else None

    return {"verdict": text('#verdict [data-testid="label-output-value"]'),
            "breakdown": text('#breakdown [data-testid="label-output-value"]'),
            "notes": text("#notes"),
            "heatmap": page.locator("#heatmap img").is_visible()}


def assert_shows(page, expected):
    """The page says what pneumo.analysis answered (`expected`, its result as a dict), in words."""
    seen = shown(page)
    for warning in expected["warnings"]:
        assert warning in seen["notes"], seen
    if expected["scope"] != OK:  # no verdict: says so where the verdict would be, and why right under it
        assert seen["verdict"] == "No verdict", seen
        assert f"Why: {expected['reason']}" in seen["notes"], seen
        assert seen["breakdown"] is None and not seen["heatmap"], seen
        assert page.locator('#verdict [data-testid$="-confidence-set"]').count() == 0  # no bars at all
        return
    assert seen["verdict"] == expected["label"], seen
    assert f"probability of pneumonia is {expected['pneumonia_probability']:.0%}" in seen["notes"], seen
    for name in ("PNEUMONIA", "NORMAL"):
        assert page.locator(f'#verdict [data-testid="{name}-confidence-set"]').inner_text().strip().endswith("%")
    if expected["population"] == "adult":  # pneumonia or not: no bacterial/viral breakdown to show
        assert seen["breakdown"] is None and "read as an adult's" in seen["notes"], seen
    else:
        top = max(expected["probabilities"], key=expected["probabilities"].get)
        assert seen["breakdown"] == top, seen
        for name in ("NORMAL", "BACTERIAL", "VIRAL"):
            assert page.locator(f'#breakdown [data-testid="{name}-confidence-set"]').is_visible()
    heatmap = page.locator("#heatmap img")
    assert seen["heatmap"] and page.evaluate("(img) => img.complete && img.naturalWidth > 0",
                                             heatmap.element_handle())


def rendered_box(page, selector):
    return page.locator(selector).bounding_box()


def expected_for(model, source):
    return analyse(source, model).as_dict()


# --- every kind of answer ----------------------------------------------------------------------------


def test_a_child_normal_film(page, model):
    assert model.identity["sha256"][:12] in page.locator("#model").inner_text()
    drop_file(page, example("child-normal"))
    analyse_now(page)
    expected = expected_for(model, example("child-normal"))
    assert expected["label"] == "NORMAL"
    assert_shows(page, expected)


def test_a_child_pneumonia_with_breakdown_and_heatmap(page, model, tmp_path):
    # The example's pixels in a PNG: a file of the user's own, unlike the example's bytes, which the app keeps.
    path = tmp_path / "xray.png"
    with Image.open(example("child-bacterial-pneumonia")) as film:
        film.save(path)
    drop_file(page, path)
    analyse_now(page)
    expected = expected_for(model, path)
    assert expected["label"] == "PNEUMONIA" and max(expected["probabilities"], key=expected["probabilities"].get) \
        == "BACTERIAL"
    assert_shows(page, expected)
    assert "not a diagnosis" in page.content()
    # The overlay fills its panel at a readable size: no large empty box around a small picture.
    image, panel = rendered_box(page, "#heatmap img"), rendered_box(page, "#heatmap")
    assert max(image["width"], image["height"]) >= 400, image
    assert image["width"] * image["height"] >= 0.6 * panel["width"] * panel["height"], (image, panel)
    # The lungs and the heart are outlined on the heatmap the page shows (cyan and pink, no heat colour).
    shown_heatmap = heatmap_pixels(page)
    cyan = (shown_heatmap[..., 0] < 170) & (shown_heatmap[..., 1] > 215) & (shown_heatmap[..., 2] > 215)
    pink = (shown_heatmap[..., 0] > 215) & (shown_heatmap[..., 1] < 190) & (shown_heatmap[..., 2] > 190)
    assert cyan.sum() > 200 and pink.sum() > 100, (cyan.sum(), pink.sum())

    # The upload was deleted after the analysis: analysing it again asks for it again.
    page.get_by_role("button", name="Analyse").click()
    assert "upload the image again" in error_toast(page)


def heatmap_pixels(page) -> np.ndarray:
    """The heatmap image as the page shows it: its bytes fetched by the page itself, as RGB pixels."""
    data = page.evaluate("""async (img) => {
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let text = ""; for (const b of bytes) text += String.fromCharCode(b);
        return btoa(text);
    }""", page.locator("#heatmap img").element_handle())
    with Image.open(io.BytesIO(base64.b64decode(data))) as picture:
        return np.asarray(picture.convert("RGB"))


def test_no_lungs_found_is_no_verdict_and_says_so(page, model, tmp_path):
    """A scanned page: no lungs, no heart; the page says No verdict and why, in words about the lungs."""
    skimage_data = require_import("skimage.data")
    path = tmp_path / "scan.png"
    Image.fromarray(skimage_data.page()).save(path)
    drop_file(page, path)
    analyse_now(page)
    expected = expected_for(model, path)
    assert expected["scope"] != OK and "lung" in expected["reason"].lower(), expected["reason"]
    assert_shows(page, expected)


def test_an_adult_film(page, model):
    """The adult answer: pneumonia or not, without a bacterial/viral breakdown (no verdict and why
    for a model without one)."""
    drop_file(page, example("adult"))
    analyse_now(page)
    expected = expected_for(model, example("adult"))
    assert_shows(page, expected)
    assert expected["population"] == "adult"
    # The model panel gives the adults' answer's threshold too, not only the children's model's.
    threshold = f"decision threshold {model.identity['adult']['threshold']:.2f}"
    assert threshold in page.locator("#model").inner_text()


def test_not_a_chest_xray(page, model, tmp_path):
    skimage_data = require_import("skimage.data")
    path = tmp_path / "cat.png"
    Image.fromarray(skimage_data.chelsea()).save(path)
    expected = expected_for(model, path)
    assert expected["scope"] == "not_chest_xray"
    drop_file(page, path)
    analyse_now(page)
    assert_shows(page, expected)
    assert "does not look like a chest X-ray" in shown(page)["notes"]


def test_a_phone_photo_of_a_film(page, model, tmp_path):
    from training.checks.photos import photo_of_film

    path = tmp_path / "photo.jpeg"
    with Image.open(example("child-bacterial-pneumonia")) as film:
        photo_of_film(film, np.random.default_rng(3), cast="warm lamp", background="wooden desk", blur=0.6).save(
            path, quality=90)
    expected = expected_for(model, path)
    assert expected["scope"] == OK and any("photo" in warning for warning in expected["warnings"])
    drop_file(page, path)
    analyse_now(page)
    assert_shows(page, expected)


def test_a_dicom_through_the_dicom_input(page, model, tmp_path):
    from tests.test_app_e2e import dicom_bytes

    with Image.open(example("child-viral-pneumonia")) as film:
        path = tmp_path / "study.dcm"
        path.write_bytes(dicom_bytes(np.asarray(film.convert("L"))))
    page.locator('#dicom input[type="file"]').set_input_files(path)  # analysed on upload, no button
    wait_for_answer(page)
    assert_shows(page, expected_for(model, path))


def test_a_broken_file_is_explained_and_the_next_one_works(page, model):
    data = example("child-normal").read_bytes()
    drag_and_drop(page, data[: len(data) // 2], "broken.jpeg", "image/jpeg")
    page.get_by_role("button", name="Analyse").click()
    message = error_toast(page)
    assert "damaged or incomplete" in message or "truncated" in message, message
    assert shown(page)["verdict"] is None
    clear_image(page)
    drop_file(page, example("child-viral-pneumonia"))
    analyse_now(page)
    assert_shows(page, expected_for(model, example("child-viral-pneumonia")))


def test_each_example_then_analyse(page, model):
    """An example is not an upload: its copy stays for the next click, unlike uploads."""
    for label, name in [*EXAMPLES.items(), ("Child normal", "child-normal")]:
        click_example(page, label)
        analyse_now(page)
        assert_shows(page, expected_for(model, example(name)))
    assert not page.get_by_test_id("toast-body").count()


# --- accessibility ----------------------------------------------------------------------------------


def serious_accessibility_violations(page):
    """axe-core's serious and critical violations on the page as it is now."""
    spec = importlib.util.find_spec("axe_playwright_python")
    require(spec is not None, "axe-core is not installed (pip install axe-playwright-python)")
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(path=Path(spec.origin).with_name("axe.min.js"))
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[node['target'] for node in v['nodes']]}"
            for v in results["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_accessibility_before_and_after_answers(open_app, model, viewport, tmp_path):
    page = open_app(viewport)
    assert serious_accessibility_violations(page) == []
    for label, name in (("Child bacterial pneumonia", "child-bacterial-pneumonia"), ("Adult", "adult")):
        click_example(page, label)
        analyse_now(page)
        assert_shows(page, expected_for(model, example(name)))
        assert serious_accessibility_violations(page) == [], label
    cat = tmp_path / "cat.png"  # and a page without a verdict
    Image.fromarray(require_import("skimage.data").chelsea()).save(cat)
    clear_image(page)
    drop_file(page, cat)
    analyse_now(page)
    assert_shows(page, expected_for(model, cat))
    assert serious_accessibility_violations(page) == [], "no verdict"


def test_analyse_from_the_keyboard(page, model):
    drop_file(page, example("child-normal"))
    page.locator("body").focus()
    for _ in range(60):  # Tab through the page until Analyse has the focus, as a keyboard user does
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.innerText?.trim() === 'Analyse'"):
            break
    else:
        pytest.fail("Analyse cannot be reached with the Tab key")
    page.keyboard.press("Enter")
    wait_for_answer(page)
    assert_shows(page, expected_for(model, example("child-normal")))


# --- on a phone, and the screenshots ---------------------------------------------------------------


def screenshot_answer(page, example, path):
    """Click an example (its label) or drop a file (a Path), analyse it, take a screenshot of the
    whole page: the docs' pictures."""
    if isinstance(example, Path):
        drop_file(page, example)
    else:
        click_example(page, example)
    analyse_now(page)
    page.mouse.move(0, 0)  # no hover colour on the button just clicked
    page.screenshot(path=path, full_page=True)


def test_on_a_phone(open_app, model, tmp_path):
    page = open_app(PHONE)
    screenshot_answer(page, "Child bacterial pneumonia", tmp_path / "phone.png")
    assert_shows(page, expected_for(model, example("child-bacterial-pneumonia")))
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing to scroll sideways
    image, panel = rendered_box(page, "#heatmap img"), rendered_box(page, "#heatmap")
    assert image["width"] >= 0.8 * panel["width"], (image, panel)  # as wide as the screen allows
    assert image["width"] * image["height"] >= 0.6 * panel["width"] * panel["height"], (image, panel)
    with Image.open(tmp_path / "phone.png") as shot:
        assert shot.width == PHONE["width"]
