"""The analysis as a tool for AI assistants (the Model Context Protocol).

Gradio turns the app's public API endpoints into MCP tools and takes each
tool's description from its `api_description`; this module holds that text,
the disclaimer for each population, and the shape of the tool's answer
(whether MCP was asked for: ui/app_settings.py).
The answer is pneumo.analysis.Analysis.as_dict() with two additions and one
removal, never a verdict of its own.
"""

import json

from pneumo.anatomy.location import describe
from pneumo.answers.populations import ADULT, CHILD, LEARNT_FROM
from pneumo.inputs.fetch import LIMIT_MB, TIMEOUT_S
from pneumo.inputs.pixels import MAX_PIXELS, MIN_SIDE, SUPPORTED

# Worded for an assistant; the facts (formats, limits, training data) come from where the code keeps them.
TOOL_DESCRIPTION = f"""\
Estimates whether a frontal chest X-ray shows pneumonia, and whether it looks bacterial or viral. \
Research demo, not a medical device and not a diagnosis: never present its answer as one.

Input `image`: the X-ray file as a base64 data URI (data:image/jpeg;base64,...) or an http(s) URL \
of the file. Formats: {SUPPORTED}; at most {LIMIT_MB} MB and {MAX_PIXELS // 1_000_000} megapixels, at \
least {MIN_SIDE} px on the shortest side. URLs must be public and answer within {TIMEOUT_S} s.

Returns JSON: `scope` ("ok", "not_chest_xray" or "outside_population"), `population` ("child" or \
"adult": whose answer it is; null without a verdict), `reason` (why there is no verdict), `label` \
("NORMAL" or "PNEUMONIA" by `threshold`, the cut of the answer that gave it), `pneumonia_probability` \
(0-1, calibrated), `probabilities` (NORMAL, BACTERIAL, VIRAL for a child; NORMAL, PNEUMONIA for an adult: \
no bacterial/viral split), `warnings`, `checks`, `model` (which model answered), `location` (PNEUMONIA \
only, else null: `zones` in the patient's terms such as "right lower", strongest first; `peak` {{x, y}} and \
`box` {{x, y, w, h}} as 0-1 fractions of the image from its top-left corner; where the model's evidence is, \
not an outline of the disease), `summary` (one or two sentences to relay) and `disclaimer` (relay it too).

Scope rules: when `scope` is not "ok" there is no verdict: `label` and the probabilities are null \
and `reason` says why (not a chest X-ray, or a patient outside the populations the answers know). Do \
not guess a verdict then. Children get the children's answer, which learnt from {LEARNT_FROM[CHILD]}; \
adults get a verdict (`population` "adult", pneumonia or not) only from the adults' answer, which \
learnt from {LEARNT_FROM[ADULT]}. Other hospitals and machines were not validated. A file that cannot \
be read gives an error saying why."""

# Relayed with every answer: what the estimate rests on, for the population whose answer it is.
DISCLAIMERS = {
    population: f"Research demo, not a diagnosis: a statistical estimate for X-rays like the ones this answer "
                f"learnt from, {LEARNT_FROM[population]}. A clinician must read the X-ray."
    for population in (CHILD, ADULT)
}
NO_VERDICT_DISCLAIMER = ("Research demo, not a diagnosis: the model gave no verdict for this image. "
                         "A clinician must read the X-ray.")


def disclaimer(population) -> str:
    """The disclaimer for an answer of `population` ("child", "adult"; None without a verdict)."""
    return DISCLAIMERS.get(population, NO_VERDICT_DISCLAIMER)


def tool_result(analysis) -> str:
    """Analysis -> the tool's JSON text. The raw numbers kept outside scope
    (`research`) are left out: an assistant would read them as a verdict."""
    result = {key: value for key, value in analysis.as_dict().items() if key != "research"}
    result["summary"] = _summary(analysis)
    result["disclaimer"] = disclaimer(analysis.population)
    return json.dumps(result)


def _summary(analysis) -> str:
    if analysis.label is None:
        return f"No verdict: {analysis.reason}"
    p = analysis.probabilities
    sign = ""
    if analysis.label == "PNEUMONIA" and "BACTERIAL" in p:  # an adult answer has no bacterial/viral split
        sign = f", more likely {'bacterial' if p['BACTERIAL'] >= p['VIRAL'] else 'viral'}"
    where = f" {describe(analysis.location)}" if analysis.location else ""
    return (f"The model's answer for this {analysis.population}'s film is {analysis.label}{sign}: estimated "
            f"probability of pneumonia {_percent(analysis.pneumonia_probability)} (it answers PNEUMONIA from "
            f"{analysis.threshold:.0%}).{where}")


def _percent(p) -> str:
    """Never "0%" or "100%": a model's estimate is not certainty."""
    return "under 1%" if p < 0.005 else "over 99%" if p > 0.995 else f"{p:.0%}"
