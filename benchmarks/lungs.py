"""The learnt lung-and-heart segmenter (pneumo/anatomy/segmenter.py): how right, how fast, and by eye.

    python benchmarks/lungs.py [--epochs N] [--size N] [--runs DIR] [--no-folds] [--no-timing] [--sheets DIR]

(a) Dice per structure (right lung, left lung, both lungs, heart) on held-out JSRT films in 5
    folds: trains one model per fold (python -m training.anatomy.segmenter RUNS/foldK --folds 5
    --fold K; a fold already trained with the same settings is reused, a killed one resumes), so
    every film is scored once by a model that never saw it. Mean, 10th percentile (the worst
    decile's edge) and the worst film. Beside it the classical lung fields
    (pneumo/anatomy/lungs.py), which need no training, on all films at their own 128 px, both the
    fields and their `.aerated` dark lung. Mind the conventions: the SCR masks outline the visible
    lung only (not behind the heart, not below the diaphragm's dome); the classical fields reach
    there on purpose, so their Dice is lower by construction, not only by error.
(b) Cost per film: the segmenter (ONNX Runtime, batch 1 and 16, p50) against the children's model
    pass (pneumo/bundled_model/model.float.onnx with its weights from model.keras, and
    model.int8.onnx), on zeros of each model's input shape, and the whole segment() call
    (squash, scale, model, post-processing) and outlines() on a real film.
(c) --sheets DIR: contact sheets with the outlines drawn (right lung red, left lung blue, heart
    yellow): children (chest_xray/val), adults read as Lung Opacity (adult_cxr; the radiologists'
    boxes in green), phone-photo-like versions (perspective, glare, vignetting), non-X-rays
    (scikit-image samples). For looking at, not scoring.

Timings on a shared machine are noisy: run it alone for figures to quote.
"""

import argparse
import csv
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pneumo.anatomy.segmenter import Segmenter  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
BUNDLED = ROOT / "pneumo" / "bundled_model"
FOLDS = 5
# What the shipped model was trained with; the fold runs default to the same unless told otherwise.
DEFAULT_EPOCHS = 15
DEFAULT_SIZE = 192
TILE = 224
COLOURS = {"right": (255, 40, 40), "left": (40, 120, 255), "heart": (255, 230, 0)}
STRUCTURES = ("right", "left", "lungs", "heart")


def lung_fields_function():
    """pneumo's classical lung fields, wherever the package move has put them."""
    for name in ("pneumo.anatomy.lungs", "pneumo.lungs"):
        try:
            return importlib.import_module(name).lung_fields
        except ImportError:
            continue
    return None


def _loaded(path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.copy()


def _truth(data, name, size):
    with Image.open(Path(data) / "masks" / name) as mask:
        return np.asarray(mask.resize((size, size), Image.NEAREST))


def _dice(pred, truth):
    pred = np.zeros(truth.shape, bool) if pred is None else pred
    total = pred.sum() + truth.sum()
    return float(2 * (pred & truth).sum() / total) if total else 1.0


def _film_scores(masks, truth):
    """masks: {"right", "left", "heart"} -> bool or None; truth: label map -> Dice per structure."""
    lungs = None if masks["right"] is None and masks["left"] is None else \
        np.logical_or(*(np.zeros(truth.shape, bool) if masks[k] is None else masks[k] for k in ("right", "left")))
    out = {"right": _dice(masks["right"], truth == 1), "left": _dice(masks["left"], truth == 2),
           "lungs": _dice(lungs, np.isin(truth, (1, 2)))}
    if "heart" in masks:
        out["heart"] = _dice(masks["heart"], truth == 3)
    return out


# ---------------------------------------------------------------- (a) Dice in folds

def train_folds(args, names):
    """Train (or reuse, or resume) one model per fold; returns the fold folders."""
    folders = []
    for fold in range(FOLDS):
        folder = Path(args.runs) / f"fold{fold}"
        info = folder / "anatomy.json"
        done = info.is_file() and (folder / "anatomy.onnx").is_file() and \
            json.loads(info.read_text()).get("epochs") == args.epochs and \
            json.loads(info.read_text()).get("input_size") == args.size and "dice" in json.loads(info.read_text())
        if not done:
            command = [sys.executable, "-m", "training.anatomy.segmenter", str(folder), "--data", str(args.data),
                       "--size", str(args.size), "--epochs", str(args.epochs), "--folds", str(FOLDS),
                       "--fold", str(fold)]
            print(f"training fold {fold}: {' '.join(command)}", file=sys.stderr, flush=True)
            subprocess.run(command, cwd=ROOT, check=True)
        folders.append(folder)
    return folders


def fold_scores(args):
    """Per-film Dice of each structure, each film scored by the fold model that held it out."""
    from training.anatomy.segmenter import film_names, split

    names = film_names(args.data)
    folders = train_folds(args, names)
    scores = {k: [] for k in STRUCTURES}
    seconds, films = [], []
    for fold, folder in enumerate(folders):
        segmenter = Segmenter.load(folder)
        held = split(names, FOLDS, fold)[1]
        info = json.loads((folder / "anatomy.json").read_text())
        seconds.append(info.get("training_seconds", float("nan")))
        for start in range(0, len(held), 16):
            chunk = held[start:start + 16]
            films_here = [_loaded(Path(args.data) / "images" / n) for n in chunk]
            for name, anatomy in zip(chunk, segmenter.segment(films_here)):
                for k, v in _film_scores(anatomy.masks(), _truth(args.data, name, segmenter.size)).items():
                    scores[k].append(v)
                films.append(name)
    return names, scores, seconds, films


def classical_scores(args, names):
    lung_fields = lung_fields_function()
    if lung_fields is None:
        return None, None, 0
    fields_scores = {k: [] for k in STRUCTURES[:3]}
    aerated_scores = {k: [] for k in STRUCTURES[:3]}
    missed = 0
    for name in names:
        image = _loaded(Path(args.data) / "images" / name)
        fields = lung_fields(image)
        size = 128 if fields is None else fields.right.shape[0]
        truth = _truth(args.data, name, size)
        if fields is None:
            missed += 1
            nothing = {"right": None, "left": None}
            for target in (fields_scores, aerated_scores):
                for k, v in _film_scores(nothing, truth).items():
                    target[k].append(v)
            continue
        for k, v in _film_scores({"right": fields.right, "left": fields.left}, truth).items():
            fields_scores[k].append(v)
        aerated = getattr(fields, "aerated", None)
        aerated = fields.mask if aerated is None else aerated
        for k, v in _film_scores({"right": aerated & fields.right, "left": aerated & fields.left}, truth).items():
            aerated_scores[k].append(v)
    return fields_scores, aerated_scores, missed


def _row(label, scores, keys=STRUCTURES):
    cells = []
    for k in keys:
        v = scores.get(k) if scores else None
        cells.append("—" if not v else f"{np.mean(v):.3f} / {np.percentile(v, 10):.3f} / {np.min(v):.3f}")
    return f"| {label} | " + " | ".join(cells) + " |"


def print_dice_table(args):
    names, scores, seconds, films = fold_scores(args)
    fields, aerated, missed = classical_scores(args, names)
    print(f"\n### Dice on held-out JSRT films ({len(films)} films, {FOLDS} folds; "
          "mean / 10th percentile / worst film)\n")
    print(f"Segmenter: {args.size} px, {args.epochs} epochs per fold, training {np.mean(seconds) / 60:.0f} min per "
          f"fold on average (2 shared CPU cores); Dice at {args.size} px after post-processing, masks resized "
          "by nearest neighbour. Classical fields: at their own 128 px, on all films (no training).\n")
    print("| method | right lung | left lung | both lungs | heart |")
    print("| --- | --- | --- | --- | --- |")
    print(_row("learnt segmenter (5 folds)", scores))
    if fields is not None:
        print(_row(f"classical lung fields (None on {missed} films: Dice 0)", fields))
        print(_row("classical fields' `.aerated` dark lung", aerated))
    else:
        print("| classical lung fields | could not be imported | | | |")
    print("\nThe SCR masks leave out the lung behind the heart and below the diaphragm's dome; the classical "
          "fields reach there by design (pneumo/anatomy/lungs.py step 5), so part of their gap is convention.")
    worst = sorted(zip(scores["lungs"], films))[:5]
    print("\nWorst films (both lungs' Dice): " + ", ".join(f"{n} {d:.3f}" for d, n in worst))


# ---------------------------------------------------------------- (b) cost

def _p50_ms(run, repeats):
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def _session(model):
    import onnxruntime as ort

    return ort.InferenceSession(model, ort.SessionOptions(), providers=["CPUExecutionProvider"])


def _zeros_run(session, batch):
    spec = session.get_inputs()[0]
    shape = [batch] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
    x = np.zeros(shape, np.float32)
    return lambda: session.run(None, {spec.name: x})


def children_sessions(folder):
    sessions = []
    int8 = folder / "model.int8.onnx"
    if int8.is_file():
        sessions.append(("children's model, model.int8.onnx", _session(str(int8))))
    graph = folder / "model.float.onnx"
    if graph.is_file() and (folder / "model.keras").is_file():
        for name in ("pneumo.model.onnx_runtime", "pneumo.runtime_onnx"):
            try:
                float_model = importlib.import_module(name).float_model
                break
            except ImportError:
                float_model = None
        if float_model is not None:
            sessions.append(("children's model, model.float.onnx (+ model.keras weights)",
                             _session(float_model(graph, folder / "model.keras"))))
    return sessions


def print_cost_table(args):
    segmenter = Segmenter.load(args.model)
    if segmenter is None:
        print(f"\nno {args.model}/anatomy.onnx: no cost table")
        return
    film = _loaded(sorted((Path(args.data) / "images").glob("*.png"))[0])
    rows = [(f"segmenter model pass ({segmenter.size} px)", segmenter.session)] + children_sessions(BUNDLED)
    print(f"\n### Cost per film, ms (ONNX Runtime {__import__('onnxruntime').__version__}, default threads, "
          "p50; 2 CPU cores shared with other work: noisy)\n")
    print("| what | batch 1 | batch 16 (per film) |")
    print("| --- | --- | --- |")
    for label, session in rows:
        one = _p50_ms(_zeros_run(session, 1), args.repeats)
        many = _p50_ms(_zeros_run(session, 16), max(3, args.repeats // 4)) / 16
        print(f"| {label} | {one:.1f} | {many:.1f} |")
    one = _p50_ms(lambda: segmenter.segment([film]), args.repeats)
    many = _p50_ms(lambda: segmenter.segment([film] * 16), max(3, args.repeats // 4)) / 16
    print(f"| segmenter `segment()` on a 512 px film (squash, scale, model, post-processing) | {one:.1f} "
          f"| {many:.1f} |")
    anatomy = segmenter.segment([film])[0]
    print(f"| `outlines()` of one film | {_p50_ms(anatomy.outlines, args.repeats):.1f} | — |")


# ---------------------------------------------------------------- (c) contact sheets

def phone_photo(image: Image.Image, rng) -> Image.Image:
    """A film photographed with a phone: on a backdrop, seen in perspective, with glare and vignetting."""
    film = image.convert("L").resize((400, int(400 * image.height / image.width)))
    w, h = film.size
    canvas = Image.new("L", (int(w * 1.3), int(h * 1.3)), int(rng.integers(10, 90)))
    canvas.paste(film, ((canvas.width - w) // 2, (canvas.height - h) // 2))
    cw, ch = canvas.size
    jitter = lambda: rng.uniform(-0.09, 0.09)  # noqa: E731
    corners = [(cw * jitter(), ch * jitter()), (cw * (1 + jitter()), ch * jitter()),
               (cw * (1 + jitter()), ch * (1 + jitter())), (cw * jitter(), ch * (1 + jitter()))]
    coefficients = _perspective_coefficients([(0, 0), (cw, 0), (cw, ch), (0, ch)], corners)
    warped = np.asarray(canvas.transform((cw, ch), Image.PERSPECTIVE, coefficients, Image.BILINEAR), np.float32)
    y, x = np.mgrid[0:ch, 0:cw] / max(cw, ch)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5) + 0.5, 0, 1)
    warped = warped + rng.uniform(50, 110) * ramp ** 2  # glare
    warped *= 1 - 0.45 * np.clip(((x - 0.5) ** 2 + (y - 0.5) ** 2) / 0.5, 0, 1)
    rgb = np.stack([warped * t for t in (1.0, rng.uniform(0.93, 1.0), rng.uniform(0.85, 1.0))], -1)
    photo = Image.fromarray(np.uint8(np.clip(rgb, 0, 255)))
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))


def _perspective_coefficients(source, target):
    """PIL's PERSPECTIVE data mapping output points `source` to input points `target`."""
    rows = []
    for (x, y), (u, v) in zip(source, target):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.array(rows, float), np.array(target, float).reshape(8)).tolist()


def non_xrays():
    import skimage.data

    for name in ("astronaut", "coffee", "camera", "page", "moon", "chelsea"):
        try:
            pixels = getattr(skimage.data, name)()
        except Exception:  # some samples need a download
            continue
        yield name, Image.fromarray(np.uint8(pixels))
    yield "flat grey", Image.new("L", (256, 256), 128)
    yield "noise", Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8))


def _tile(image, anatomy, caption, boxes=(), source_size=None):
    tile = image.convert("L").resize((TILE, TILE), Image.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(tile)
    if source_size is not None:
        sx, sy = TILE / source_size[0], TILE / source_size[1]
        for x, y, w, h in boxes:
            draw.rectangle([x * sx, y * sy, (x + w) * sx, (y + h) * sy], outline=(0, 220, 0), width=1)
    found = []
    for name, polygon in anatomy.outlines().items():
        if polygon is None:
            continue
        found.append(name)
        draw.line([(x * TILE, y * TILE) for x, y in polygon], fill=COLOURS[name], width=2)
    missing = [n for n in ("right", "left", "heart") if n not in found]
    text = caption[:34] + ("" if not missing else "  no " + ",".join(missing))
    draw.rectangle([0, TILE - 13, TILE, TILE], fill=(0, 0, 0))
    draw.text((3, TILE - 12), text, fill=(255, 255, 255))
    return tile


def _sheet(tiles, path, columns=6):
    out = Image.new("RGB", (columns * TILE, -(-len(tiles) // columns) * TILE), (40, 40, 40))
    for i, tile in enumerate(tiles):
        out.paste(tile, ((i % columns) * TILE, (i // columns) * TILE))
    out.save(path)
    print(f"wrote {path} ({len(tiles)} films)")


def _spread(items, count):
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count)] if len(items) > count else items


def write_sheets(args):
    segmenter = Segmenter.load(args.model)
    out = Path(args.sheets)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    val = SHARED / "chest_xray" / "val"
    children = _spread(sorted((val / "NORMAL").glob("*.jpeg")), 12) + \
        _spread(sorted((val / "PNEUMONIA").glob("*.jpeg")), 12)
    films = [(f"{p.parent.name[:4]} {p.stem}", _loaded(p), (), None) for p in children]
    _sheet([_tile(i, a, c) for (c, i, _, _), a in zip(films, segmenter.segment([f[1] for f in films]))],
           out / "children.png")
    adults_dir = SHARED / "adult_cxr"
    with open(adults_dir / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["rsna_class"] == "Lung Opacity"]
    adults = []
    for r in _spread(rows, 24):
        boxes = [tuple(float(v) for v in b.split(",")) for b in r["rsna_boxes"].split(";") if b]
        image = _loaded(adults_dir / r["file"])
        adults.append((f"{r['view']} {r['file'][4:-5]}", image, boxes, image.size))
    _sheet([_tile(i, a, c, b, s) for (c, i, b, s), a in zip(adults, segmenter.segment([f[1] for f in adults]))],
           out / "adults_lung_opacity.png")
    originals = films[::4][:6] + adults[::4][:6]
    photos = [(f"photo {c}", phone_photo(i, rng)) for c, i, _, _ in originals]
    _sheet([_tile(i, a, c) for (c, i), a in zip(photos, segmenter.segment([p[1] for p in photos]))],
           out / "photos.png")
    others = list(non_xrays())
    _sheet([_tile(i, a, c) for (c, i), a in zip(others, segmenter.segment([o[1] for o in others]))],
           out / "non_xrays.png", columns=4)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(SHARED / "lung_masks"), help="the lung_masks folder")
    p.add_argument("--model", default=str(BUNDLED), help="the folder with anatomy.onnx (cost, sheets)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "anatomy-folds"), help="where the fold models go")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"per fold (default {DEFAULT_EPOCHS})")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"per fold (default {DEFAULT_SIZE})")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per cost figure")
    p.add_argument("--no-folds", action="store_true", help="skip (a), the fold training and Dice table")
    p.add_argument("--no-timing", action="store_true", help="skip (b)")
    p.add_argument("--sheets", metavar="DIR", help="write the contact sheets (c) there")
    args = p.parse_args(argv)
    if not args.no_folds:
        print_dice_table(args)
    if not args.no_timing:
        print_cost_table(args)
    if args.sheets:
        write_sheets(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
