"""Regenerate docs/screenshot.png: the app in headless Chromium on one real X-ray.

    python docs/make_screenshot.py --xray /path/to/chest_xray/val/PNEUMONIA/x.jpeg [--model RUN_FOLDER]

Without --model the app serves what it would serve anyway (PNEUMO_MODEL_PATH,
else the bundled model). The X-ray itself is not stored in the repository.
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app_server import running_app  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, drag_and_drop  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xray", type=Path, required=True, help="a JPEG or PNG chest X-ray")
    parser.add_argument("--model", type=Path, help="a training run folder (default: the app's choice)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    mime = "image/png" if args.xray.suffix.lower() == ".png" else "image/jpeg"
    with tempfile.TemporaryDirectory() as workdir, running_app(args.model, Path(workdir)) as app, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(app.url)
        drag_and_drop(page, args.xray.read_bytes(), "xray" + args.xray.suffix.lower(), mime)
        page.get_by_role("button", name="Analyse").click()
        page.locator('#verdict [data-testid="label-output-value"]').wait_for()
        page.locator("#heatmap img").wait_for()
        page.wait_for_timeout(500)  # let the bars finish their transition
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
