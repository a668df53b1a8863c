"""The one path from an upload to an answer.

    analyse(source) -> Analysis          one file, with a heatmap
    analyse_many(sources) -> [Analysis]  a batch (the CLI)

The web UI, `/predict`, `/predict_dicom`, the CLI and the MCP tool all call
these and only shape the result; none of them assembles a verdict itself,
so they agree by construction.

    file ─▶ decode ─▶ photo of a film? take the film ─▶ turned or inverted? turn it back
         ─▶ model ─▶ scope ─▶ child: calibration ─────────────────────▶ Analysis
                     (child? adult?)  adult: the adult answer's pass ─▶

The model may answer only when the scope check says `ok`, and it answers
for the population the check routes the film to: a child gets the three
classes of the children's model, an adult the adult answer (pneumo/answers/adult.py:
pneumonia or not, no bacterial/viral split, from its own trunk: a branch that continues the
same pass, or a second pass; pneumo/model/one_pass.py).
Otherwise `label`, `pneumonia_probability` and `probabilities` are None,
`reason` says why in a sentence, and the model's raw numbers survive only
under `research`, a field named so that nobody mistakes it for a verdict.
"""

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from pneumo.answers.calibration import calibrate
from pneumo.answers.classes import CLASSES, pneumonia_probability
from pneumo.inputs.decode import Decoded, decode
from pneumo.anatomy.location import locate, lungs_or_assumed, outlines_in_upload
from pneumo.anatomy.mirror import unmirrored
from pneumo.inputs.orientation import upright
from pneumo.inputs.photo import film_of
from pneumo.model.predict import adult_outputs, model_outputs
from pneumo.model.preprocess import preprocess
from pneumo.checks.scope import ADULT, NOT_CHEST_XRAY, OK, adult_scope, assess_scope

# The keys of the model's identity that every result repeats. `threshold` is the children's model's cut,
# `adult_threshold` the adults' answer's (None without one); a result's own `threshold` is the one that gave its label.
MODEL_KEYS = ("name", "source", "repo", "revision", "commit", "sha256", "runtime", "threshold", "adult_threshold",
              "fallback_reason")


@dataclass
class Analysis:
    scope: str  # "ok", "not_chest_xray" or "outside_population" (pneumo/checks/scope.py)
    population: str | None  # whose answer: "child" or "adult" when scope is "ok"; None without a verdict
    reason: str | None  # why there is no verdict, for people; None when scope is "ok"
    label: str | None  # "NORMAL" or "PNEUMONIA" by `threshold`; None outside scope
    pneumonia_probability: float | None  # calibrated P(pneumonia); None outside scope
    probabilities: dict | None  # calibrated NORMAL, BACTERIAL, VIRAL (child) or NORMAL, PNEUMONIA (adult)
    threshold: float | None  # the cut on pneumonia_probability that gave `label`; None outside scope
    warnings: list[str]  # notes that do not stop a verdict (from decoding, the photo step, a film turned back)
    research: dict | None  # outside scope only: what the model computed anyway; not a verdict
    checks: dict  # the scope checks' scores and thresholds
    model: dict  # which model answered
    location: dict | None = None  # PNEUMONIA verdicts only: zones, peak, box (pneumo/anatomy/location.py)
    # The outlines of the right lung, the left lung and the heart, each a closed polygon [[x, y], ...] in the
    # uploaded image's frame (null: not found); None for an image that is no chest X-ray (pneumo/anatomy/)
    lungs: dict | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)  # (h, w) in [0, 1]; only in scope
    image: Image.Image | None = field(default=None, repr=False)  # what the model saw (the film of a photo)
    fields: object = field(default=None, repr=False)  # the lung fields behind `location` (LungFields), for the overlay
    outlines: dict | None = field(default=None, repr=False)  # `lungs` on `image` (0-1 of the film), for the overlay

    def as_dict(self) -> dict:
        """The JSON result of every entry point (docs/result.md)."""
        return {key: getattr(self, key) for key in RESULT_FIELDS}


# The result's fields, in order (docs/result.md); archive runs write one column each.
RESULT_FIELDS = ("scope", "population", "reason", "label", "pneumonia_probability", "probabilities", "threshold",
                 "warnings", "research", "checks", "model", "location", "lungs")


def analyse(source, loaded=None, with_heatmap=True) -> Analysis:
    """One file (a path or its bytes), a Decoded or a PIL image -> Analysis.
    Raises pneumo.inputs.decode.InputError for files that cannot be read."""
    return _analyse_decoded([_as_decoded(source)], loaded, with_heatmap)[0][0]


@dataclass
class Evidence:
    """Where the evidence lies on a film, verdict or not: for measuring (benchmarks/localisation.py),
    never part of a result, which locates PNEUMONIA verdicts only."""
    analysis: Analysis
    heatmap: np.ndarray  # the answer's heatmap; without an answer, the children's model's
    location: object  # pneumo.anatomy.location.Location of that heatmap, or None


def evidence(source, loaded=None) -> Evidence:
    """`analyse`, plus where the evidence lies whatever the verdict (see Evidence)."""
    results, found = _analyse_decoded([_as_decoded(source)], loaded, with_heatmap=True, everywhere=True)
    return Evidence(results[0], *found[0])


def analyse_many(sources, loaded=None, batch_size=16) -> list[Analysis]:
    """Many decoded inputs -> Analyses, in batches. With heatmaps (a product of the maps
    the pass gives anyway: cheap) so that PNEUMONIA verdicts carry their location."""
    decoded = [_as_decoded(source) for source in sources]
    return [a for start in range(0, len(decoded), batch_size)
            for a in _analyse_decoded(decoded[start:start + batch_size], loaded, with_heatmap=True)[0]]


def _as_decoded(source) -> Decoded:
    if isinstance(source, Decoded):
        return source
    if isinstance(source, Image.Image):
        return Decoded(source)
    return decode(source)


def _analyse_decoded(decoded: list[Decoded], loaded, with_heatmap, everywhere=False) -> tuple[list, list]:
    """(Analyses, and with `everywhere` each film's (heatmap, Location) whatever its verdict, else [])."""
    if loaded is None:
        from pneumo.model.loading import get_model

        loaded = get_model()
    films, anatomies, lungs = films_as_read(loaded, [d.image for d in decoded])
    inputs = np.concatenate([preprocess(film.image, loaded.config["image_size"]) for film in films])
    outputs = model_outputs(loaded, inputs, with_heatmap)
    scopes = [assess_scope(film, outputs.pooled[i], outputs.regions[i], loaded, anatomy)
              for i, (film, anatomy) in enumerate(zip(films, anatomies))]
    scopes, answers = _answers(loaded, films, lungs, scopes, outputs, with_heatmap)
    model = {key: loaded.identity.get(key) for key in MODEL_KEYS}
    results = [_result(d, film, anatomy, fields, scope, answer, outputs.raw[i], loaded, model)
               for i, (d, film, anatomy, fields, scope, answer)
               in enumerate(zip(decoded, films, anatomies, lungs, scopes, answers))]
    found = []
    if everywhere:  # the heatmap of the answer the film gets; without one, the children's model's
        for i, (d, film, fields, answer) in enumerate(zip(decoded, films, lungs, answers)):
            heatmap = answer.heatmap if answer is not None else outputs.heatmaps[i]
            found.append((heatmap, locate(heatmap, film, d.image.size, fields=fields)))
    return results, found


def films_as_read(loaded, images) -> tuple[list, list, list]:
    """Decoded images -> what the model reads of each: (its film, pneumo.inputs.photo.Film: a photo's film,
    turned back upright, mirrored back when the heart says so; its lungs and heart, pneumo/anatomy/segmenter.py
    Anatomy, None without a segmenter; its lung fields, LungFields, where lungs usually lie if none are found).
    Serving and the fits of the checks on it (training/checks/scope.py) read films through this one step."""
    films = [upright(film_of(image), loaded.orientation_check) for image in images]
    anatomies = [None] * len(films)
    if loaded.segmenter is not None:
        # One pass per film: its anatomy serves the mirror check, the lung fields, the scope and the outlines.
        anatomies = loaded.segmenter.segment([film.image for film in films])
        restored = {i: film for i, film in enumerate(map(unmirrored, films, anatomies)) if film is not None}
        # A film mirrored back is another image and gets a pass of its own: the segmenter is not a mirror-symmetric
        # function, so the first pass's masks mirrored are not its masks (on the 4 such films of 304 val/ and
        # 60 NIH films, 170 to 2,500 pixels of a structure differed, and the softmax by up to 0.98).
        for i, anatomy in zip(restored, loaded.segmenter.segment([film.image for film in restored.values()])):
            films[i], anatomies[i] = restored[i], anatomy
    return films, anatomies, [lungs_or_assumed(film.image, anatomy) for film, anatomy in zip(films, anatomies)]


@dataclass
class _Answer:
    pneumonia_probability: float
    probabilities: dict  # calibrated, by class name
    threshold: float
    heatmap: np.ndarray | None


def _answers(loaded, films, lungs, scopes, outputs, with_heatmap) -> tuple[list, list]:
    """Each film's final scope and its answer from the population the scope routes it to (None
    outside scope). Adults' answers come in one batch: a head with its own trunk continues the
    pass (a branch) or makes a second one, and its own checks may still send a film outside (pneumo/checks/scope.py, `adult_scope`)."""
    scopes = list(scopes)
    answers = [_child_answer(loaded, outputs, i) if s.code == OK and s.population != ADULT else None
               for i, s in enumerate(scopes)]
    adults = [i for i, s in enumerate(scopes) if s.code == OK and s.population == ADULT]
    if adults:
        # The adult answer pools over the lung fields it was fitted on (pneumo/answers/adult.py); whether the
        # film shows lungs at all is the drawn anatomy's call.
        shared = outputs.shared[adults] if outputs.shared is not None else None
        found = adult_outputs(loaded, [films[i].image for i in adults], outputs.maps[adults], with_heatmap, shared)
        for row, i in enumerate(adults):
            scopes[i] = adult_scope(scopes[i], found.features[row], lungs[i] if found.lungs else None,
                                    loaded.adult_check)
            if scopes[i].code == OK:
                answers[i] = _adult_answer(loaded.adult_head, found, row)
    return scopes, answers


def _result(decoded, film, anatomy, fields, scope, answer, raw, loaded, model) -> Analysis:
    """One film's Analysis from its anatomy, its lung fields, its scope and its answer."""
    outlines = anatomy.outlines() if anatomy is not None and scope.code != NOT_CHEST_XRAY else None
    lungs = outlines_in_upload(outlines, film, decoded.image.size)
    warnings = decoded.warnings + film.warnings
    if scope.code != OK:
        # How it was read as a film (turned back, a photo's film taken) would contradict the refusal: the file's own only.
        warnings = list(decoded.warnings)
        # A heatmap or a label here would look like evidence: only the raw numbers stay, by name.
        probabilities = calibrate(raw, loaded.config)
        research = {"pneumonia_probability": float(pneumonia_probability(probabilities)),
                    "probabilities": {name: float(p) for name, p in zip(CLASSES, probabilities)}}
        return Analysis(scope.code, None, scope.reason, None, None, None, None, warnings, research, scope.scores,
                        model, lungs=lungs, image=film.image, outlines=outlines)
    sick, threshold = answer.pneumonia_probability, answer.threshold
    label = "PNEUMONIA" if sick >= threshold else "NORMAL"
    # Where the evidence is, only for a PNEUMONIA verdict: on a NORMAL film it would point at nothing.
    where = (locate(answer.heatmap, film, decoded.image.size, fields=fields)
             if label == "PNEUMONIA" and answer.heatmap is not None else None)
    return Analysis(OK, scope.population, None, label, sick, answer.probabilities, threshold, warnings, None,
                    scope.scores, model, where.as_dict() if where else None, lungs, heatmap=answer.heatmap,
                    image=film.image, fields=fields, outlines=outlines)


def _child_answer(loaded, outputs, i) -> _Answer:
    """The children's model: calibrated three classes, its threshold, its heatmap."""
    probabilities = calibrate(outputs.raw[i], loaded.config)
    named = {name: float(p) for name, p in zip(CLASSES, probabilities)}
    heatmap = outputs.heatmaps[i] if outputs.heatmaps is not None else None
    return _Answer(float(pneumonia_probability(probabilities)), named, float(loaded.config["threshold"]), heatmap)


def _adult_answer(head, found, row) -> _Answer:
    """The adult answer: P(pneumonia) alone (no bacterial/viral split), its threshold, its heatmap."""
    sick = float(head.probability(found.features[row][None])[0])
    heatmap = found.heatmaps[row] if found.heatmaps is not None else None
    return _Answer(sick, {"NORMAL": 1.0 - sick, "PNEUMONIA": sick}, head.threshold, heatmap)
