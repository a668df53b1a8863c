"""How often pneumo/anatomy/lungs.py finds a pair of lung fields, and how fast.

    python benchmarks/lung_fields.py [--sheets DIR]

Sets: val/ children, adult films (the first 300 of adult_cxr), phone photos
of val/ films (training/checks/photos.py, after the app's photo step), and
non-X-rays (scikit-image samples that ship with it, blank, noise). Finding
lungs is not checked here for being right: that is what the contact sheets
(--sheets: PNG files with each film's zones outlined) are for, by eye.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pneumo.anatomy.lungs import lung_fields  # noqa: E402
from pneumo.inputs.photo import film_of  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TILE = 192
COLOURS = [(255, 0, 0), (255, 128, 0), (255, 255, 0), (0, 255, 0), (0, 200, 255), (180, 0, 255)]


def sets():
    from training.checks.photos import photo_of_film

    val = sorted((SHARED / "chest_xray" / "val").glob("*/*.jpeg"))
    yield "val/ children", [_loaded(p) for p in val]
    yield "adult films", [_loaded(p) for p in sorted((SHARED / "adult_cxr").glob("*.jpeg"))[:300]]
    rng = np.random.default_rng(0)
    yield "phone photos of val/ films", [film_of(photo_of_film(Image.open(p), rng)).image for p in val[::2]]
    yield "non-X-rays", list(non_xrays())


def _loaded(path) -> Image.Image:
    """Decoded now, so that the timing below is the lung step's alone."""
    with Image.open(path) as image:
        image.load()
        return image.copy()


def non_xrays():
    import skimage.data

    for name in ("astronaut", "camera", "coins", "text", "chelsea", "moon", "page", "rocket", "coffee", "horse",
                 "clock", "grass", "gravel", "brick", "checkerboard", "logo"):
        try:
            pixels = getattr(skimage.data, name)()
        except Exception:  # some samples need a download: left out
            continue
        yield Image.fromarray(np.uint8(pixels) * (255 if pixels.dtype == bool else 1))
    yield Image.new("L", (256, 256), 128)
    yield Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8))


def sheet(images, path, columns=8, count=32):
    chosen = images[:: max(1, len(images) // count)][:count]
    out = Image.new("RGB", (columns * TILE, -(-len(chosen) // columns) * TILE))
    for i, image in enumerate(chosen):
        tile = image.convert("L").resize((TILE, TILE)).convert("RGB")
        fields = lung_fields(image)
        if fields is not None:
            zones = np.asarray(Image.fromarray(np.uint8(fields.zone_map() + 1)).resize((TILE, TILE), Image.NEAREST))
            pixels = np.asarray(tile).copy()
            for z, colour in enumerate(COLOURS):
                mask = zones == z + 1
                pixels[mask & ~(np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1)
                                & np.roll(mask, -1, 1))] = colour
            tile = Image.fromarray(pixels)
        else:
            ImageDraw.Draw(tile).text((4, 4), "no lungs found", fill=(255, 0, 255))
        out.paste(tile, ((i % columns) * TILE, (i // columns) * TILE))
    out.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sheets", help="also write a contact sheet per set into this folder")
    args = parser.parse_args()
    print("| set | images | lung fields found | time per image p50 / p95 |")
    print("| --- | --- | --- | --- |")
    for name, images in sets():
        seconds, found = [], 0
        for image in images:
            start = time.perf_counter()
            found += lung_fields(image) is not None
            seconds.append(time.perf_counter() - start)
        print(f"| {name} | {len(images)} | {found / len(images):.1%} | "
              f"{np.percentile(seconds, 50) * 1000:.1f} ms / {np.percentile(seconds, 95) * 1000:.1f} ms |")
        if args.sheets:
            Path(args.sheets).mkdir(parents=True, exist_ok=True)
            sheet(images, Path(args.sheets) / (name.split()[0].strip("/") + ".png"))


if __name__ == "__main__":
    main()
