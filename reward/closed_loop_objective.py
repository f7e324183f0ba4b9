"""What the closed loop optimises after a round of votes, and why: the raters' taste (U) on
the preference model that predicts votes on unseen prompts best, when one beats chance (and,
while the budget allows more votes, beats it clearly); otherwise another round of votes while
the budget allows, then a stop. Prompt adherence (R) only when the admin chose it. And where
the taste lives: which of the prompt's fields the votes ask to move (RL explores those and
keeps the rest as the prompt asks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from generation.music.listening import (
    BODY_ONLY_FEATURES,
    LISTENING_FEATURES,
    PROMPT_FIELD_FEATURES,
)
from generation.music.prompt_sampling import PROMPT_VARIANT_AXES
from generation.music.variants import AXIS_FEATURES, VARIANT_AXES
from reward.learning.measured import support_threshold, supported_features, weight_z_scores
from reward.models import RewardModel


def support_figures(reward_model: RewardModel) -> tuple[str, dict[str, Any]]:
    """Which of a preference model's figures say whether the votes hold a taste, and those
    figures: the cross-validated ones over all its votes where the trainer made them (the
    measured-feature model), else its held-out fifth's."""
    crossed = reward_model.metrics.get("cross_validated")
    if crossed:
        return f"cross-validated over {crossed.get('votes')} votes", crossed
    heldout = reward_model.metrics.get("heldout") or {}
    return f"on {heldout.get('votes')} held-out votes", heldout


def better_than_chance(reward_model: RewardModel) -> bool:
    """Whether a preference model predicts votes on prompts it never saw better than chance
    with 95% confidence (`support_figures`): its accuracy interval above 0.5, or its
    log-likelihood gain over a coin above 0 (each a one-sided 2.5% test, so together at most
    5%). The gain is not diluted by the pairs on which raters are indifferent, as accuracy
    is."""
    _, figures = support_figures(reward_model)
    accuracy_low = (figures.get("accuracy_ci") or [None])[0]
    gain_low = (figures.get("gain_over_chance_ci") or [None])[0]
    return (accuracy_low is not None and accuracy_low > 0.5) or (
        gain_low is not None and gain_low > 0
    )


def trusted_preference_model(candidates: list[RewardModel]) -> RewardModel | None:
    """Of the preference models that beat chance, the most accurate on prompts they never
    saw (None: none does, and optimising one would optimise noise)."""
    trusted = [model for model in candidates if better_than_chance(model)]
    return max(trusted, key=lambda m: support_figures(m)[1]["accuracy"], default=None)


OBJECTIVES = ("auto", "R")  # auto: the raters' taste (U), only where the votes support one


@dataclass(frozen=True)
class Decision:
    """What the loop does after a round of votes, and why (printed and reported)."""

    action: str  # "optimise", "collect" (another round of votes) or "stop"
    preset: str | None  # "U" or "R" when optimising
    reward_model: RewardModel | None  # the preference model U optimises
    reason: str
    # A round to collect that only needs votes along some axes: its pairs vary those alone
    # (every axis when empty).
    variant_axes: tuple[str, ...] = ()


def uncertain_axes(reward_model: RewardModel, error: float = 0.05) -> dict[str, dict[str, float]]:
    """The variant axes (`variants.AXIS_FEATURES`) that move a feature the measured model's
    votes leave in doubt, with those features' z-scores: a weight that passes its own
    two-sided test at `error` but not the one shared among every feature (`measured
    .supported_features`), on a feature no supported one already speaks for on the same
    axis. Votes on pairs that differ along such an axis alone tell whether the raters care
    about it. Empty for a model without weight intervals (nothing can be told)."""
    metrics = reward_model.metrics or {}
    chosen = metrics.get("supported_features") or {}
    weights = chosen.get("weights_before") or metrics.get("weights") or {}
    z_scores = weight_z_scores(weights, metrics.get("weight_intervals") or {}, LISTENING_FEATURES)
    if not z_scores:
        return {}
    supported = support_threshold(len(z_scores))
    own = support_threshold(1, error)
    doubtful = {name: z for name, z in z_scores.items() if own < abs(z) <= supported}
    axes: dict[str, dict[str, float]] = {}
    for axis in VARIANT_AXES:
        features = AXIS_FEATURES[axis]
        if any(abs(z_scores.get(name, 0.0)) > supported for name in features):
            continue  # the axis already speaks through a supported feature
        if in_doubt := {name: doubtful[name] for name in features if name in doubtful}:
            axes[axis] = in_doubt
    return axes


def _heldout_summary(model: RewardModel) -> str:
    where, figures = support_figures(model)
    low, high = figures.get("accuracy_ci") or (None, None)
    if figures.get("accuracy") is None or low is None:
        return f"{model.name}: not measured"
    summary = f"{model.name}: {figures['accuracy']:.3f} [{low:.3f}, {high:.3f}] {where}"
    gain, (gain_low, gain_high) = (
        figures.get("gain_over_chance"), figures.get("gain_over_chance_ci") or (None, None)
    )  # fmt: skip
    if gain is not None and gain_low is not None:
        summary += f", {gain:+.3f} [{gain_low:+.3f}, {gain_high:+.3f}] nats a vote over chance"
    return summary


def objective_decide(
    *,
    objective: str,
    preference_models: list[RewardModel],
    rounds_done: int,
    max_rounds: int,
    confident_lower: float = 0.5,
    uncertain_error: float | None = None,
) -> Decision:
    """U on the preference model that predicts the held-out votes best, when one beats
    chance; otherwise more votes while the budget allows, then a stop. The loop never
    switches to another objective on its own: optimising a model that does not beat chance
    optimises noise, and optimising adherence instead ships what the raters did not ask for.
    R (prompt adherence) runs only when the admin chose it.

    confident_lower: a model that beats chance, but whose interval's lower end stays below
    this, gets another round of votes while the budget allows (a model that barely beats
    chance knows little of the taste, and RL on it moves little the raters care about);
    after the last round it is optimised, as the best the votes support.

    uncertain_error: a model that beats chance clearly, but whose votes leave some axis in
    doubt (`uncertain_axes` at this error), gets another round of votes on pairs that vary
    those axes alone while the budget allows: a taste a few pairs hint at (a mode variant is
    about 1 pair in 18 of a first round) is either pinned down or shown to be noise before
    RL spends its time. None: no such round."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    if objective == "R":
        return Decision("optimise", "R", None, "prompt adherence (R), as the admin chose")
    trusted = trusted_preference_model(preference_models)
    rounds_left = rounds_done < max_rounds
    if trusted is not None:
        lower = support_figures(trusted)[1]["accuracy_ci"][0]
        doubtful = (
            uncertain_axes(trusted, uncertain_error)
            if uncertain_error is not None and rounds_left and lower >= confident_lower
            else {}
        )
        if doubtful:
            hints = "; ".join(
                f"{axis} ({', '.join(f'{name} z {z:+.1f}' for name, z in features.items())})"
                for axis, features in doubtful.items()
            )
            return Decision(
                "collect", None, None,
                f"{_heldout_summary(trusted)} beats chance, but its votes leave in doubt "
                f"whether the raters care about {hints}: collecting pairs that vary "
                f"{', '.join(doubtful)} alone, round {rounds_done + 1} of at most {max_rounds}",
                variant_axes=tuple(doubtful),
            )  # fmt: skip
        if lower >= confident_lower or not rounds_left:
            reason = (
                f"U on {_heldout_summary(trusted)}: it predicts votes on prompts it never saw "
                "better than chance"
            )
            if lower < confident_lower:
                reason += (
                    f" (its accuracy interval's lower end is below {confident_lower:.2f}, and "
                    "the budget's rounds of collection are spent)"
                )
            return Decision("optimise", "U", trusted, reason)
        return Decision(
            "collect", None, None,
            f"{_heldout_summary(trusted)} beats chance, but its accuracy interval's lower end "
            f"is below {confident_lower:.2f}: collecting more votes to pin the taste down, "
            f"round {rounds_done + 1} of at most {max_rounds}",
        )  # fmt: skip
    figures = "; ".join(_heldout_summary(model) for model in preference_models)
    if rounds_left:
        return Decision(
            "collect", None, None,
            f"no preference model beats chance on votes on prompts it never saw ({figures}): "
            f"collecting more votes, round {rounds_done + 1} of at most {max_rounds}",
        )  # fmt: skip
    return Decision(
        "stop", None, None,
        f"no preference model beats chance on votes on prompts it never saw after {rounds_done} "
        f"round(s) of collection ({figures}): the votes do not support a taste to optimise, "
        "so nothing is fine-tuned. Collect more votes (a larger budget) or choose R.",
    )  # fmt: skip


def raters_agreement_gap(model: RewardModel) -> dict[str, Any] | None:
    """A preference model's held-out accuracy against the raters' own agreement on the same
    held-out pairs (the chance that two votes on a pair agree; `rater_agreement`): a model
    that predicts a vote as well as another rater's vote does stands at a gap of 0 or more.
    The accuracy is read on the votes the agreement counts (decisive votes on pairs with two
    or more) when the model measured it there. A model that was cross-validated is also read
    on every pair (`cross_validated`): each vote predicted by a fit that never saw its
    prompt, against the raters' agreement on all pairs, five times as many as held out.
    None when the held-out pairs have too few votes each to measure agreement."""
    heldout = model.metrics.get("heldout") or {}
    accuracy = heldout.get("agreement_pairs_accuracy", heldout.get("accuracy"))
    ceilings = model.metrics.get("noise_ceiling") or {}
    raters = ceilings.get("heldout") or {}
    if accuracy is None or raters.get("agreement") is None:
        return None
    figures = {
        "accuracy": accuracy,
        "raters_agreement": raters["agreement"],
        "gap": accuracy - raters["agreement"],
        "raters_leave_one_out_accuracy": raters.get("accuracy"),
        "best_possible_upper": raters.get("ceiling_upper"),
        "pairs": raters.get("n_pairs"),
    }
    every = ceilings.get("all") or {}
    crossed = (model.metrics.get("cross_validated") or {}).get("agreement_pairs_accuracy")
    if crossed is not None and every.get("agreement") is not None:
        figures["cross_validated"] = {
            "accuracy": crossed,
            "raters_agreement": every["agreement"],
            "gap": crossed - every["agreement"],
            "pairs": every.get("n_pairs"),
        }
    return figures


def against_the_raters(model: RewardModel) -> str:
    figures = raters_agreement_gap(model)
    if figures is None:
        return f"{model.name}: the held-out pairs have too few votes to measure agreement"
    line = (
        f"{model.name}: held-out accuracy {figures['accuracy']:.3f}; the raters' own agreement "
        f"on the same {figures['pairs']} pairs {figures['raters_agreement']:.3f} (gap "
        f"{figures['gap']:+.3f}; best possible at most {figures['best_possible_upper']:.3f})"
    )
    if crossed := figures.get("cross_validated"):
        line += (
            f"; cross-validated on all {crossed['pairs']} pairs {crossed['accuracy']:.3f} "
            f"against the raters' {crossed['raters_agreement']:.3f} (gap {crossed['gap']:+.3f})"
        )
    return line


@dataclass(frozen=True)
class TasteFields:
    """Which of the prompt's fields (evaluation.FIT_PARTS) the votes ask to move, and so what
    RL may change: `pulled` maps each to the features whose weights say so."""

    pulled: dict[str, list[str]]
    kept: tuple[str, ...]  # RLOOConfig.kept_fields: held as the prompt asks
    explored: tuple[str, ...]  # RLOOConfig.explore_fields: the pulled ones a variant can vary
    # The body-only features the reward weighs, when it weighs nothing else: no plan can
    # move such a reward, so RL skips its plan stage and gives the time to whole samples
    # (`closed_loop.rl_settings`).
    body_only: tuple[str, ...] = ()

    def summary(self) -> str:
        if not self.pulled:
            line = (
                "the votes ask to move none of the prompt's fields: RL keeps "
                f"{', '.join(self.kept)} as asked and explores nothing"
            )
        else:
            because = "; ".join(
                f"{name} ({', '.join(features)})" for name, features in self.pulled.items()
            )
            kept = f"keeps {', '.join(self.kept)} as asked" if self.kept else "keeps nothing fixed"
            explored = ", ".join(self.explored) or "nothing"
            line = f"the votes ask to move {because}: RL explores {explored} and {kept}"
        if self.body_only:
            line += (
                f"; the reward weighs only what the notes alone decide "
                f"({', '.join(self.body_only)}), so RL skips the plan stage and moves the "
                "body itself"
            )
        return line

    @property
    def in_plan(self) -> bool:
        """Whether a plan can move the reward (a plan stage is worth its time)."""
        return not self.body_only

    def to_dict(self) -> dict[str, Any]:
        return {
            "pulled": self.pulled,
            "kept": list(self.kept),
            "explored": list(self.explored),
            "body_only": list(self.body_only),
        }


def taste_fields(measured_model: RewardModel | None) -> TasteFields:
    """The fields the measured-feature model's weights pull away from the request: one whose
    signed measure (faster, more instruments, minor) has a weight clearly away from 0, or whose
    fit to the request has one clearly below 0. "Clearly": |weight| / its standard error
    beyond the normal quantile of a two-sided test at SUPPORT_ERROR shared among every feature
    tested (Bonferroni, `measured.supported_features`), the standard error read off the
    weight's 95% bootstrap interval.
    Every other field is kept: a reward that never learned to care about the key can still
    pay for another key through what a transposition does to the lead's register. Without
    that model's weights and intervals nothing can be told apart, and every field is kept.
    A model that kept only its supported features (`support_error`) says which they were,
    tested among all its features: those decide, and when every one of them is one no plan
    token decides (`BODY_ONLY_FEATURES`), `body_only` names them."""
    metrics = measured_model.metrics if measured_model else {}
    weights, intervals = metrics.get("weights") or {}, metrics.get("weight_intervals") or {}
    tested = [
        feature for signed, fit in PROMPT_FIELD_FEATURES.values() for feature in (*signed, fit)
    ]
    body_only: tuple[str, ...] = ()
    if chosen := metrics.get("supported_features"):
        # A model refitted on the features its votes support rewards only those: a field is
        # pulled exactly when the reward RL optimises can pull it.
        z_scores = {name: z for name, z in chosen["z"].items() if name in tested}
        if chosen["z"] and set(chosen["z"]) <= set(BODY_ONLY_FEATURES):
            body_only = tuple(sorted(chosen["z"]))
    else:
        z_scores = supported_features(weights, intervals, tested)
    pulled: dict[str, list[str]] = {}
    for name, (signed, fit) in PROMPT_FIELD_FEATURES.items():
        pulling = [feature for feature in signed if feature in z_scores]
        if z_scores.get(fit, 0.0) < 0:
            pulling.append(fit)
        if pulling:
            pulled[name] = pulling
    return TasteFields(
        pulled=pulled,
        kept=tuple(name for name in PROMPT_FIELD_FEATURES if name not in pulled),
        explored=tuple(axis for axis in PROMPT_VARIANT_AXES if axis in pulled),
        body_only=body_only,
    )
