"""Regenerate the docs' screenshots: the app in headless Chromium, answering its own examples.

    python docs/make_screenshot.py [--model RUN_FOLDER] [--out-dir docs]

writes, with the same steps as the browser tests (tests/test_browser.py):
  screenshot.png             a laptop window (1280 px), a verdict (the bacterial pneumonia example)
  screenshot-no-verdict.png  a laptop window, no verdict and why (a photo of a cat: not a chest X-ray)
  screenshot-phone.png       a phone (390 px wide), a verdict

Without --model the app serves what it would serve anyway (PNEUMO_MODEL_PATH,
else the bundled model). The examples are public films (examples/README.md).
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app_server import running_app  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, LAPTOP, PHONE, open_page, screenshot_answer  # noqa: E402

SHOTS = [("screenshot.png", LAPTOP, "Child bacterial pneumonia"),
         ("screenshot-no-verdict.png", LAPTOP, "a photo of a cat"),
         ("screenshot-phone.png", PHONE, "Child bacterial pneumonia")]


def cat_photo(folder) -> Path:
    """scikit-image's photo of a cat (public domain), as a user's upload."""
    from PIL import Image
    from skimage import data

    path = Path(folder) / "cat.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a training run folder (default: the app's choice)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as workdir, running_app(args.model, Path(workdir)) as app, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for name, viewport, example in SHOTS:
            page, errors = open_page(browser, app.url, viewport)
            screenshot_answer(page, cat_photo(workdir) if example == "a photo of a cat" else example,
                              args.out_dir / name)
            if errors:
                sys.exit("errors in the page:\n" + "\n".join(errors))
            page.close()
            print(f"wrote {args.out_dir / name}")
        browser.close()


if __name__ == "__main__":
    main()
