"""Does the evidence sit where radiologists boxed the disease? On the boxed adult films.

    python benchmarks/localisation.py [--data ../shared/data/adult_cxr] [--limit N] [--no-fine]

Films: those of labels.csv with RSNA "Lung Opacity" boxes (`rsna_boxes`) or
NIH Pneumonia boxes (`nih_boxes`), in 384-px pixels; a film's boxes are the
union of both. Each goes once through pneumo.analysis.evidence (analyse on the
served model, PNEUMO_* settings as in the app, plus the location computed even
without a PNEUMONIA verdict: never shown to users; here only to measure).

For each method:
- pointing game: the share of films whose `peak` lies inside a box;
- IoU: the mean IoU of `box` with the union of the boxes (on a 384 grid);
- zones named: the share of films whose zone words name at least one zone
  the boxes cover (a zone is covered when a box holds at least 10% of its
  area or 25% of the box lies in it, zones taken from the film's lung fields).

Methods: "in the lung fields" is what ships (pneumo/anatomy/location.py): the
heatmap of the answer the film got, inside the lung fields. For adults it
is the opacity map (pneumo/answers/opacity.py) when the run folder has one; that
one was fitted on these very films, so it is refitted here in five folds
by patient (training/adults/opacity.py, --seed) and each film gets the map fitted
without its patient. "whole frame" is the same heatmap over the whole
film, zones as halves and thirds of the frame (the app before lung
fields). "adult read-out's Grad-CAM, in the lung fields": Grad-CAM of the
run folder's adult answer (adult.npz, pneumo/answers/adult.py), what adults were
shown before the opacity map; its own PNEUMONIA calls (at its threshold)
are a row of their own. Without --no-fine, "lung fields, 16 x 16": a
finer Grad-CAM of the children's model from the same maps and head
kernel, the film moved a quarter of a cell four ways and the four 8 x 8
maps interleaved (four more model passes; measured here, not shipped).
With --block4, "lung fields, block 4 (16 x 16)": Grad-CAM of P(pneumonia)
on the children's model's block4_conv3 maps, computed with Keras
(TensorFlow), measured here only.

Rows: films the model calls PNEUMONIA (the targets: pointing >= 70%,
zones >= 80%), split by whose answer called them (the population check
routes some adult films to the children's answer), films with another
answer (NORMAL, or no verdict: out of scope) and all boxed films, each
with the location computed whatever the answer (pneumo.analysis.evidence).
"""

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pneumo.answers.adult import AdultHead, adult_features  # noqa: E402
from pneumo.analysis import evidence  # noqa: E402
from pneumo.inputs.decode import decode  # noqa: E402
from pneumo.model.heatmap import channel_weights, class_activation  # noqa: E402
from pneumo.model.loading import BUNDLED_DIR  # noqa: E402
from pneumo.anatomy.lungs import FIELD_SIDE, ZONES, lung_fields  # noqa: E402
from pneumo.anatomy.location import assumed_fields, locate, lungs_or_assumed  # noqa: E402
from pneumo.inputs.photo import film_of  # noqa: E402
from pneumo.model.predict import adult_heatmaps, lung_grid, trunk_maps  # noqa: E402
from pneumo.model.preprocess import preprocess  # noqa: E402
from training.adults.opacity import BOX_SIDE, box_mask, boxes_of, out_of_fold_maps, read_films  # noqa: E402

SIDE = BOX_SIDE  # the films' and boxes' pixels
ADULT_METHOD = "adult read-out's Grad-CAM, in the lung fields"
BLOCK4_METHOD = "lung fields, block 4 (16 x 16, Keras)"
COVERED_ZONE_SHARE, COVERED_BOX_SHARE = 0.10, 0.25


def covered_zones(boxes, zone_map) -> set:
    """Zones (names) the boxes cover, on the FIELD_SIDE zone map."""
    covered = set()
    for box in boxes:
        inside = box_mask([box], FIELD_SIDE)
        for index, name in enumerate(ZONES):
            zone = zone_map == index
            overlap = (zone & inside).sum()
            if zone.any() and (overlap >= COVERED_ZONE_SHARE * zone.sum()
                               or overlap >= COVERED_BOX_SHARE * inside.sum()):
                covered.add(name)
    return covered


def scores(location: dict, boxes, covered) -> tuple:
    union = box_mask(boxes, SIDE)
    px, py = (min(int(location["peak"][k] * SIDE), SIDE - 1) for k in ("x", "y"))
    b = location["box"]
    predicted = box_mask([(b["x"] * SIDE, b["y"] * SIDE, b["w"] * SIDE, b["h"] * SIDE)], SIDE)
    iou = (predicted & union).sum() / max((predicted | union).sum(), 1)
    return float(union[py, px]), float(iou), float(bool(set(location["zones"]) & covered))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "adult_cxr"))
    parser.add_argument("--no-fine", action="store_true", help="skip the 16 x 16 heatmap (4 model passes a film)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N boxed films (a quick look)")
    parser.add_argument("--block4", action="store_true", help="also Grad-CAM on block4_conv3 (Keras, TensorFlow)")
    parser.add_argument("--seed", type=int, default=0, help="the opacity map's folds by patient")
    args = parser.parse_args()
    rows = [row for row in csv.DictReader(open(Path(args.data) / "labels.csv")) if boxes_of(row)]
    rows = rows[:args.limit] if args.limit else rows
    from pneumo.model.loading import get_model

    loaded = get_model()
    held_out = _held_out_opacity_maps(loaded, args.data, args.seed)
    adult_head = AdultHead.load(os.environ.get("PNEUMO_MODEL_PATH") or BUNDLED_DIR)
    results = {"whole frame": [], "in the lung fields": [], "lung fields, 16 x 16 (4 shifted passes)": [],
               ADULT_METHOD: [], BLOCK4_METHOD: []}
    block4 = _block4_gradcam(os.environ.get("PNEUMO_MODEL_PATH") or BUNDLED_DIR) if args.block4 else None
    counts = {method: [] for method in results}
    groups, populations, adult_calls, found = [], [], [], 0
    seconds = {"analyse (with heatmap)": [], "locate (lung fields, zones, peak, box)": []}
    for row in rows:
        decoded = decode(str(Path(args.data) / row["file"]))
        if held_out:
            loaded.opacity_map = held_out[row["file"]]  # fitted without this patient's films
        start = time.perf_counter()
        found_here = evidence(decoded, loaded)
        analysis = found_here.analysis
        film = film_of(decoded.image)
        seconds["analyse (with heatmap)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        locate(found_here.heatmap, film, decoded.image.size)
        seconds["locate (lung fields, zones, peak, box)"].append(time.perf_counter() - start)
        fields = lung_fields(film.image)
        found += fields is not None
        covered = covered_zones(boxes_of(row), (fields or assumed_fields()).zone_map())
        heatmap = found_here.heatmap
        frame = locate(heatmap, film, decoded.image.size, restrict=False).as_dict()
        lungs = analysis.location or found_here.location.as_dict()
        results["whole frame"].append(scores(frame, boxes_of(row), covered))
        results["in the lung fields"].append(scores(lungs, boxes_of(row), covered))
        counts["whole frame"].append(len(frame["zones"]))
        counts["in the lung fields"].append(len(lungs["zones"]))
        if not args.no_fine:
            fine = locate(_fine(loaded, film), film, decoded.image.size).as_dict()
            results["lung fields, 16 x 16 (4 shifted passes)"].append(scores(fine, boxes_of(row), covered))
            counts["lung fields, 16 x 16 (4 shifted passes)"].append(len(fine["zones"]))
        if adult_head is not None:
            heat, called = _adult_evidence(adult_head, loaded, film)
            where = locate(heat, film, decoded.image.size).as_dict()
            results[ADULT_METHOD].append(scores(where, boxes_of(row), covered))
            counts[ADULT_METHOD].append(len(where["zones"]))
            adult_calls.append(called)
        if block4 is not None:
            heat = block4(preprocess(film.image, loaded.config["image_size"]))
            where = locate(heat, film, decoded.image.size).as_dict()
            results[BLOCK4_METHOD].append(scores(where, boxes_of(row), covered))
            counts[BLOCK4_METHOD].append(len(where["zones"]))
        groups.append(analysis.label or f"no verdict ({analysis.scope})")
        populations.append(analysis.population)
    groups, populations = np.array(groups), np.array(populations)
    print(f"model: {loaded.identity.get('name')} ({loaded.identity.get('runtime')}); {len(rows)} boxed films; "
          f"lung fields found on {found} ({found / len(rows):.0%}), assumed on the rest")
    print("answers: " + ", ".join(f"{name} {int((groups == name).sum())}" for name in sorted(set(groups)))
          + "; routed to the adult answer " + str(int((populations == "adult").sum()))
          + ", to the children's " + str(int((populations == "child").sum())))
    called = groups == "PNEUMONIA"
    subsets = {"called PNEUMONIA": called,
               "called PNEUMONIA by the adult answer": called & (populations == "adult"),
               "called PNEUMONIA by the children's answer": called & (populations == "child"),
               "other answers (NORMAL or no verdict)": ~called, "all boxed films": np.ones(len(groups), bool)}
    if adult_calls:
        subsets["the adult read-out calls PNEUMONIA"] = np.array(adult_calls)
    print("\n| films | n | method | peak in a box | mean IoU of box | zone words name a boxed zone |")
    print("| --- | --- | --- | --- | --- | --- |")
    for subset, chosen in subsets.items():
        for method, values in results.items():
            if not values:
                continue
            values = np.array(values)[chosen]
            cells = [f"{values[:, 0].mean():.1%}", f"{values[:, 1].mean():.3f}", f"{values[:, 2].mean():.1%}"] \
                if len(values) else ["-", "-", "-"]
            print(f"| {subset} | {int(chosen.sum())} | {method} | " + " | ".join(cells) + " |")
    print("\ntargets on films called PNEUMONIA: peak in a box >= 70%, zone words >= 80%")
    print("\nzones named per film: " + ", ".join(f"{method} {np.mean(counts[method]):.2f}"
                                                for method in results if counts[method]))
    for step, values in seconds.items():
        print(f"{step}: p50 {np.percentile(values, 50) * 1000:.1f} ms, p95 {np.percentile(values, 95) * 1000:.1f} ms")





def _held_out_opacity_maps(loaded, data, seed) -> dict:
    """File -> an opacity map fitted without the film's patient (training/adults/opacity.py), when the run
    folder has one; {} otherwise. The run folder's own was fitted on these very films."""
    if loaded.opacity_map is None:
        return {}
    started = time.perf_counter()
    held_out = out_of_fold_maps(read_films(loaded, data, log=lambda _: None), seed)
    print(f"opacity map: refitted in folds by patient (seed {seed}) in {time.perf_counter() - started:.0f} s")
    return held_out


def shifted(inputs: np.ndarray, step: int) -> np.ndarray:
    """(1, H, W, 3) model input -> (4, H, W, 3): its content moved `step` px (a quarter of a cell of
    the maps) right and down, right and up, left and down, left and up (edges repeated)."""
    def move(a, by, axis):
        edge = np.take(a, [0] if by > 0 else [-1], axis=axis)
        kept = np.take(a, np.arange(a.shape[axis] - abs(by)) + (0 if by > 0 else abs(by)), axis=axis)
        pad = np.repeat(edge, abs(by), axis=axis)
        return np.concatenate([pad, kept] if by > 0 else [kept, pad], axis=axis)

    x = inputs[0]
    return np.stack([move(move(x, dx, 1), dy, 0) for dx in (step, -step) for dy in (step, -step)])


def fine_heatmap(maps, probabilities, head_kernel) -> np.ndarray:
    """The maps (4, h, w, C) of `shifted` inputs (moved a quarter of a cell) and the verdict's softmax
    outputs (3,) -> one (2h, 2w) heatmap in [0, 1]: the four grids interleaved.

    Cell i of the maps is centred at (i + 1/2) cells of the input. Content moved right by a quarter
    cell puts the evidence that was at (i + 1/4) cells into cell i, moved left that at (i + 3/4):
    together they sample it every half cell, at the centres of a grid twice as fine, from the same
    Grad-CAM weights (the verdict's, so that all four passes explain the same answer)."""
    maps = np.asarray(maps, np.float64)
    weights = channel_weights(np.asarray(probabilities)[None], head_kernel, maps.shape[1] * maps.shape[2])[0]
    cams = np.maximum(np.einsum("nhwc,c->nhw", maps, weights), 0.0)
    n, h, w = cams.shape
    fine = np.zeros((2 * h, 2 * w))
    # Moved right (down) by a quarter cell: the even columns (rows) of the fine grid; left (up): the odd.
    for cam, (dx, dy) in zip(cams, ((0, 0), (0, 1), (1, 0), (1, 1))):
        fine[dy::2, dx::2] = cam
    peak = fine.max()
    return (fine / peak if peak > 0 else fine).astype(np.float32)


def _adult_evidence(head, loaded, film):
    """The adult read-out's heatmap of `film` and whether it calls it PNEUMONIA (one more model pass):
    of the adult trunk's maps for a head that reads them, else of the children's model's."""
    if head.trunk:
        maps = trunk_maps(loaded.adult_trunk, [film.image])
    else:
        _, maps = loaded.runtime(preprocess(film.image, loaded.config["image_size"]))
    weights = lung_grid([lungs_or_assumed(film.image)], maps) if head.lungs else None
    heat = adult_heatmaps(head, maps, weights)[0]
    return heat, bool(head.probability(adult_features(maps, weights))[0] >= head.threshold)


def _block4_gradcam(folder):
    """A function: model input (1, H, W, 3) -> Grad-CAM of P(pneumonia) on block4_conv3, (16, 16) at 128 px."""
    import keras
    import tensorflow as tf

    from pneumo.model.run_folder import KERAS_MODEL

    model = keras.saving.load_model(Path(folder) / KERAS_MODEL, compile=False)
    probe = keras.Model(model.inputs, [model.get_layer("block4_conv3").output, model.output])

    def heatmap(inputs):
        with tf.GradientTape() as tape:
            maps, probabilities = probe(tf.convert_to_tensor(inputs), training=False)
            sick = probabilities[:, 1] + probabilities[:, 2]
        weights = tf.reduce_mean(tape.gradient(sick, maps), axis=(1, 2))
        return class_activation(maps.numpy(), weights.numpy())[0]

    return heatmap


def _fine(loaded, film):
    """The 16 x 16 heatmap of pneumo.model.heatmap.fine_heatmap: four copies of the film moved by a quarter cell."""
    size = loaded.config["image_size"]
    inputs = preprocess(film.image, size)
    raw, maps = loaded.runtime(shifted(inputs, size // 32))
    return fine_heatmap(maps, raw[0], loaded.runtime.head_kernel)


if __name__ == "__main__":
    main()
