"""May the model answer for this image, and which part of it? Checked in order:

    not_chest_xray       not a chest X-ray at all (pneumo/ood.py: image
                         statistics, then the distance of the model's
                         features from the training X-rays')
    outside_population   a chest X-ray, but of no population an answer was
                         validated on
    ok                   the model may give its verdict, for the `population`
                         the population check (pneumo/population.py) routes it to:

    population  "child"  young children: the children's model, three classes
                "adult"  adults: the adult answer (pneumo/adult.py), pneumonia
                         yes or no, only where the run folder has one that met
                         the shipping rule; else adults are outside_population

The checks only gate and route: they never change the probabilities.
"""

from dataclasses import dataclass, field

from .ood import feature_distance_reason, statistics_reason

OK, NOT_CHEST_XRAY, OUTSIDE_POPULATION = "ok", "not_chest_xray", "outside_population"
SCOPES = (OK, NOT_CHEST_XRAY, OUTSIDE_POPULATION)
CHILD, ADULT = "child", "adult"
POPULATIONS = (CHILD, ADULT)


@dataclass
class Scope:
    code: str  # one of SCOPES
    reason: str | None = None  # for people, when the code is not OK
    scores: dict = field(default_factory=dict)  # the checks' figures and thresholds
    population: str | None = None  # CHILD or ADULT when the code is OK: whose answer the film gets


def assess_scope(film, pooled, regions, loaded) -> Scope:
    """`film`: pneumo.photo.Film (the X-ray, or the film found in a photo);
    `pooled`, `regions`: the model's features of it (pneumo/predict.py; None: that check is skipped)."""
    scores = {}
    reason = statistics_reason(film.image)
    if reason is None:
        reason, distance = feature_distance_reason(pooled, loaded.ood_check)
        if distance is not None:
            scores.update(chest_xray_distance=distance, chest_xray_threshold=float(loaded.ood_check.threshold))
    if reason is not None:
        return Scope(NOT_CHEST_XRAY, not_chest_xray_reason(reason, film.is_photo), scores)
    population = loaded.population_check
    if population is None or regions is None:
        return Scope(OK, scores=scores, population=CHILD)
    outside = float(population.outside_probability(regions[None])[0])
    scores.update(outside_population_probability=outside, outside_population_threshold=float(population.threshold))
    if outside < population.threshold:
        return Scope(OK, scores=scores, population=CHILD)
    if loaded.adult_head is not None:
        return Scope(OK, scores=scores, population=ADULT)
    return Scope(OUTSIDE_POPULATION, outside_population_reason(population), scores)


def not_chest_xray_reason(why, is_photo=False) -> str:
    what = "This photo does not seem to show a chest X-ray" if is_photo else "This does not look like a chest X-ray"
    return f"{what}: {why}. The model only reads frontal chest X-rays, so it gives no verdict."


def outside_population_reason(population) -> str:
    measured = ""
    if population.adult_sensitivity == population.adult_sensitivity:  # not NaN: measured when fitted
        measured = f" (on adult films it caught only {population.adult_sensitivity:.0%} of the pneumonias)"
    return ("This looks like an adult chest X-ray. The model was trained on X-rays of young children "
            f"(aged 1–5, one hospital) and misses most pneumonia in adults{measured}, so it gives no verdict.")
