"""May the model answer for this image, and which part of it? Checked in order:

    not_chest_xray       not a chest X-ray at all (pneumo/checks/ood.py: image
                         statistics, then the distance of the model's
                         features from the training X-rays'; pneumo/checks/anatomy.py:
                         two lungs and a heart where they belong overrule the
                         features, no lung nor heart at all refuses)
    outside_population   a chest X-ray, but of no population an answer was
                         validated on
    ok                   the model may give its verdict, for the `population`
                         the population check (pneumo/checks/population.py) routes it to:

    population  "child"  young children: the children's model, three classes
                "adult"  adults: the adult answer (pneumo/answers/adult.py), pneumonia
                         yes or no, only where the run folder has one that met
                         the shipping rule; else adults are outside_population.
                         A film without lung fields of its own, or whose
                         adult-answer features lie far from the adult films'
                         it learnt from (adult_check.npz), is
                         outside_population too: `adult_scope`.

A run folder without a population check cannot tell whose film it is, so
every chest X-ray is outside_population there (NO_POPULATION_CHECK).

The checks only gate and route: they never change the probabilities.
"""

from dataclasses import dataclass, field, replace

from pneumo.checks.anatomy import anatomy_reason, chest_like
from pneumo.checks.ood import COLOUR, feature_distance_reason, statistics_reason

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


def assess_scope(film, pooled, regions, loaded, anatomy=None) -> Scope:
    """`film`: pneumo.inputs.photo.Film (the X-ray, or the film found in a photo);
    `pooled`, `regions`: the model's features of it (pneumo/model/predict.py; None: that check is skipped);
    `anatomy`: its lungs and heart (pneumo/anatomy/segmenter.py; None: no segmenter)."""
    scores = {}
    reason = statistics_reason(film.image)
    if reason is None:
        reason, distance = feature_distance_reason(pooled, loaded.ood_check)
        if distance is not None:
            scores.update(chest_xray_distance=distance, chest_xray_threshold=float(loaded.ood_check.threshold))
    if anatomy is not None and reason != COLOUR:
        scores.update(chest_anatomy=chest_like(anatomy))
        # Two lungs and a heart where they belong: a chest X-ray, even one of low contrast or unlike the
        # training hospitals' films. X-rays are grey, though: a colour image stays refused.
        reason = None if scores["chest_anatomy"] else reason or anatomy_reason(anatomy)
    if reason is not None:
        return Scope(NOT_CHEST_XRAY, not_chest_xray_reason(reason, film.is_photo), scores)
    population = loaded.population_check
    if population is None or regions is None:  # whose film it is cannot be told: no answer is safe to give
        return Scope(OUTSIDE_POPULATION, NO_POPULATION_CHECK, scores)
    adult = float(population.adult_probability(regions[None])[0])
    scores.update(adult_probability=adult, adult_threshold=float(population.threshold))
    if adult < population.threshold:
        return Scope(OK, scores=scores, population=CHILD)
    if loaded.adult_head is not None:
        return Scope(OK, scores=scores, population=ADULT)
    return Scope(OUTSIDE_POPULATION, outside_population_reason(population), scores)


NO_POPULATION_CHECK = ("This model cannot tell a young child's chest X-ray from an adult's (its run folder has no "
                       "population check, population.npz), and its answer was validated on young children only "
                       "(aged 1–5, one hospital), so it gives no verdict.")


def not_chest_xray_reason(why, is_photo=False) -> str:
    what = "This photo does not seem to show a chest X-ray" if is_photo else "This does not look like a chest X-ray"
    return f"{what}: {why}. The model only reads frontal chest X-rays, so it gives no verdict."


def outside_population_reason(population) -> str:
    """An adult's film where no adult answer serves. No figure of the children's model on adults here: the
    one measured on radiologists' readings is in docs/who-it-is-for.md (adult.json `child_model_roc_auc`)."""
    return ("This looks like an adult chest X-ray. The model was trained on X-rays of young children "
            "(aged 1–5, one hospital), and no answer for adults serves with it, so it gives no verdict.")


# Said of images that the checks before took for adults' films but that may be no chest X-ray at all (a text page).
UNLIKE_ADULTS = ("This is unlike the adult chest X-rays the adults' answer learnt from (frontal films of one "
                 "hospital); it may not be a frontal chest X-ray at all, so the model gives no verdict.")
NO_LUNGS = ("No lung fields were found on this image, and the adults' answer reads the lungs, so the model gives "
            "no verdict. A frontal chest X-ray, upright and uncropped, may work.")


def adult_scope(scope, features, lungs, check) -> Scope:
    """An adult film's scope after the adult answer's own two checks. `lungs`: the film's lung fields
    (pneumo.anatomy.lungs.LungFields; None for a head that pools over the whole film); `check`: pneumo/checks/ood.py's
    distance on the adult answer's features, fitted on adult films (adult_check.npz; None: no such check).
    The children's model lets a few non-X-rays through (a scanned page, a photo); a film without lungs
    of its own, or far from every adult film, gets outside_population instead of a confident answer."""
    if lungs is not None and lungs.assumed:
        return Scope(OUTSIDE_POPULATION, NO_LUNGS, scope.scores)
    if check is None:
        return scope
    distance = float(check.distance(features[None])[0])
    scores = {**scope.scores, "adult_features_distance": distance, "adult_features_threshold": float(check.threshold)}
    if distance > check.threshold:
        return Scope(OUTSIDE_POPULATION, UNLIKE_ADULTS, scores)
    return replace(scope, scores=scores)
