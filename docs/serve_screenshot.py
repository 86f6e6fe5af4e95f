"""The README's screenshot of ``kpjax serve``: the page with the astronaut's keypoints, in Debian's headless Chromium.

    kpjax serve --port 8000 &
    python docs/serve_screenshot.py --url http://127.0.0.1:8000/ --out docs/serve.png
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import skimage.data
from PIL import Image
from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/")
    parser.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        photo = Path(folder) / "astronaut.jpg"
        Image.fromarray(skimage.data.astronaut()).save(photo, quality=90)
        browser = playwright.chromium.launch(executable_path=args.chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1060, "height": 700})
        page.goto(args.url)
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#overlay circle.keypoint")
        shot = Image.open(io.BytesIO(page.screenshot()))
        browser.close()
    # A palette PNG: a tenth of the RGB file's size, and the page's flat colours survive.
    shot.convert("RGB").quantize(128, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
