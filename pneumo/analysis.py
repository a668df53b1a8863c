"""The one path from an upload to an answer.

    analyse(source) -> Analysis          one file, with a heatmap
    analyse_many(sources) -> [Analysis]  a batch (the CLI)

The web UI, `/predict`, `/predict_dicom`, the CLI and the MCP tool all call
these and only shape the result; none of them assembles a verdict itself,
so they agree by construction.

    file ─▶ decode ─▶ photo of a film? take the film ─▶ turned or inverted? turn it back
         ─▶ model ─▶ scope ─▶ calibration ─▶ Analysis
                     (child? adult?)

The model may answer only when the scope check says `ok`, and it answers
for the population the check routes the film to: a child gets the three
classes of the children's model, an adult the adult answer (pneumo/adult.py:
pneumonia or not, no bacterial/viral split), both from the same pass.
Otherwise `label`, `pneumonia_probability` and `probabilities` are None,
`reason` says why in a sentence, and the model's raw numbers survive only
under `research`, a field named so that nobody mistakes it for a verdict.
"""

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .calibration import calibrate
from .classes import CLASSES, pneumonia_probability
from .decode import Decoded, decode
from .location import locate, lungs_or_assumed
from .orientation import upright
from .photo import film_of
from .predict import model_outputs
from .preprocess import preprocess
from .scope import ADULT, OK, assess_scope

# The keys of the model's identity that every result repeats.
MODEL_KEYS = ("name", "source", "repo", "revision", "commit", "sha256", "runtime", "threshold", "fallback_reason")


@dataclass
class Analysis:
    scope: str  # "ok", "not_chest_xray" or "outside_population" (pneumo/scope.py)
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
    location: dict | None = None  # PNEUMONIA verdicts only: zones, peak, box (pneumo/location.py)
    heatmap: np.ndarray | None = field(default=None, repr=False)  # (h, w) in [0, 1]; only in scope
    image: Image.Image | None = field(default=None, repr=False)  # what the model saw (the film of a photo)
    lungs: object = field(default=None, repr=False)  # the lung fields behind `location`, for the overlay
    # analyse(..., research_location=True) only, never shown: where the evidence is on any film,
    # verdict or not (benchmarks/localisation.py). A pneumo.location.Location, or None.
    research_location: object = field(default=None, repr=False)
    research_heatmap: np.ndarray | None = field(default=None, repr=False)  # the heatmap behind it

    def as_dict(self) -> dict:
        """The JSON result of every entry point (README: "The result")."""
        return {key: getattr(self, key) for key in RESULT_FIELDS}


# The result's fields, in order (README: "The result"); archive runs write one column each.
RESULT_FIELDS = ("scope", "population", "reason", "label", "pneumonia_probability", "probabilities", "threshold",
                 "warnings", "research", "checks", "model", "location")


def analyse(source, loaded=None, with_heatmap=True, research_location=False) -> Analysis:
    """One file (a path or its bytes), a Decoded or a PIL image -> Analysis.
    research_location: also locate the evidence when there is no PNEUMONIA verdict, in
    `research_location` only (for measuring; never part of the result).
    Raises pneumo.decode.InputError for files that cannot be read."""
    return _analyse_decoded([_as_decoded(source)], loaded, with_heatmap or research_location, research_location)[0]


def analyse_many(sources, loaded=None, batch_size=16) -> list[Analysis]:
    """Many decoded inputs -> Analyses, in batches. With heatmaps (a product of the maps
    the pass gives anyway: cheap) so that PNEUMONIA verdicts carry their location."""
    decoded = [_as_decoded(source) for source in sources]
    return [a for start in range(0, len(decoded), batch_size)
            for a in _analyse_decoded(decoded[start:start + batch_size], loaded, with_heatmap=True)]


def _as_decoded(source) -> Decoded:
    if isinstance(source, Decoded):
        return source
    if isinstance(source, Image.Image):
        return Decoded(source)
    return decode(source)


def _analyse_decoded(decoded: list[Decoded], loaded, with_heatmap, research_location=False) -> list[Analysis]:
    if loaded is None:
        from .loading import get_model

        loaded = get_model()
    films = [upright(film_of(d.image), loaded.orientation_check) for d in decoded]
    inputs = np.concatenate([preprocess(film.image, loaded.config["image_size"]) for film in films])
    lungs = [lungs_or_assumed(film.image) for film in films] if _reads_lungs(loaded) else None
    outputs = model_outputs(loaded, inputs, with_heatmap, lungs)
    model = {key: loaded.identity.get(key) for key in MODEL_KEYS}
    results = [_result(loaded, d, film, outputs, i, model) for i, (d, film) in enumerate(zip(decoded, films))]
    if research_location:
        for i, (result, d, film) in enumerate(zip(results, decoded, films)):
            result.research_heatmap = outputs.heatmaps[i]
            result.research_location = locate(outputs.heatmaps[i], film, d.image.size)
    return results


def _reads_lungs(loaded) -> bool:
    """Whether the adult answer pools its features over the lung fields (pneumo/adult.py)."""
    return bool(loaded.adult_head and loaded.adult_head.lungs)


def _result(loaded, decoded, film, outputs, i, model) -> Analysis:
    """Row i of the batch's outputs -> its Analysis."""
    scope = assess_scope(film, outputs.pooled[i], outputs.regions[i], loaded)
    warnings = decoded.warnings + film.warnings
    if scope.code != OK:
        # A heatmap or a label here would look like evidence: only the raw numbers stay, by name.
        sick, probabilities, _, _ = _child_answer(loaded, outputs, i)
        research = {"pneumonia_probability": sick, "probabilities": probabilities}
        return Analysis(scope.code, None, scope.reason, None, None, None, None, warnings, research, scope.scores,
                        model, image=film.image)
    answer = _adult_answer if scope.population == ADULT else _child_answer
    sick, probabilities, threshold, heatmap = answer(loaded, outputs, i)
    label = "PNEUMONIA" if sick >= threshold else "NORMAL"
    # Where the evidence is, only for a PNEUMONIA verdict: on a NORMAL film it would point at nothing.
    where = locate(heatmap, film, decoded.image.size) if label == "PNEUMONIA" and heatmap is not None else None
    return Analysis(OK, scope.population, None, label, sick, probabilities, threshold, warnings, None, scope.scores,
                    model, where.as_dict() if where else None, heatmap=heatmap, image=film.image,
                    lungs=where.fields if where else None)


def _child_answer(loaded, outputs, i):
    """The children's model: calibrated three classes, its threshold, its heatmap."""
    probabilities = calibrate(outputs.raw[i], loaded.config)
    named = {name: float(p) for name, p in zip(CLASSES, probabilities)}
    heatmap = outputs.heatmaps[i] if outputs.heatmaps is not None else None
    return float(pneumonia_probability(probabilities)), named, float(loaded.config["threshold"]), heatmap


def _adult_answer(loaded, outputs, i):
    """The adult answer: P(pneumonia) alone (no bacterial/viral split), its threshold, its heatmap."""
    head = loaded.adult_head
    features = outputs.adult_lungs if head.lungs else outputs.adult
    sick = float(head.probability(features[i][None])[0])
    heatmap = outputs.adult_heatmaps[i] if outputs.adult_heatmaps is not None else None
    return sick, {"NORMAL": 1.0 - sick, "PNEUMONIA": sick}, head.threshold, heatmap
