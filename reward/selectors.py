"""Reads for the reward-model pages and API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import OuterRef, Subquery

from generation.music.evaluation import FIT_PARTS
from ratings.models import Campaign, Pair
from reward.models import FineTuneRun, RewardModel, TrackReward

# The figure a model is judged by, per kind, as a path into its metrics.
HEADLINE_METRICS = {
    RewardModel.Kind.PREFERENCE: ("heldout", "accuracy", "held-out pairwise accuracy"),
    RewardModel.Kind.QUALITY: ("heldout", "pearson", "held-out Pearson r"),
    RewardModel.Kind.ADHERENCE: ("heldout", "text_to_music_r1", "held-out retrieval R@1"),
}


def headline(reward_model: RewardModel) -> dict[str, Any] | None:
    """{label, value, low, high} of the model's main figure, when it has been measured."""
    section, key, label = HEADLINE_METRICS[reward_model.kind]
    figures = reward_model.metrics.get(section) or {}
    if figures.get(key) is None:
        return None
    interval = figures.get(f"{key}_ci") or [None, None]
    return {"label": label, "value": figures[key], "low": interval[0], "high": interval[1]}


def reward_model_rows() -> list[dict[str, Any]]:
    models = RewardModel.objects.select_related("created_by").order_by("-created_at")
    return [{"model": model, "headline": headline(model)} for model in models]


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metrics as (dotted name, value) rows for a plain table."""
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flatten_metrics(value, f"{name}."))
        elif (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int | float) or v is None for v in value)
        ):
            rows.append((name, f"[{_fmt(value[0])}, {_fmt(value[1])}]"))
        else:
            rows.append((name, _fmt(value)))
    return rows


def _fmt(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def noise_ceiling(reward_model: RewardModel) -> dict[str, Any] | None:
    """The raters' own agreement on the held-out pairs (the best a model can expect)."""
    ceiling = (reward_model.metrics.get("noise_ceiling") or {}).get("heldout") or {}
    if ceiling.get("accuracy") is None:
        return None
    return {
        "value": ceiling["accuracy"],
        "low": ceiling.get("low"),
        "high": ceiling.get("high"),
        "upper": ceiling.get("ceiling_upper"),
        "pairs": ceiling.get("n_pairs"),
        "votes": ceiling.get("n_votes"),
    }


CURVE_TITLES = {
    RewardModel.Kind.PREFERENCE: "Pairwise accuracy",
    RewardModel.Kind.QUALITY: "Correlation with ratings",
    RewardModel.Kind.ADHERENCE: "Retrieval",
}


def weight_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """A measured preference model's weights, strongest first, each with its bootstrap
    interval (None for models fitted before intervals were stored); settled: the interval
    does not span 0."""
    intervals = metrics.get("weight_intervals") or {}
    rows = []
    for feature, weight in (metrics.get("weights") or {}).items():
        low, high = intervals.get(feature, (None, None))
        settled = low is not None and (low > 0 or high < 0)
        rows.append({"feature": feature, "weight": weight, "low": low, "high": high,
                     "settled": settled})  # fmt: skip
    return sorted(rows, key=lambda row: -abs(row["weight"]))


def reward_model_report(reward_model: RewardModel) -> dict[str, Any]:
    tabled = {"weights", "weight_intervals"}  # shown in their own table
    return {
        "curve_title": CURVE_TITLES[reward_model.kind],
        "headline": headline(reward_model),
        "noise_ceiling": noise_ceiling(reward_model),
        "weights": weight_rows(reward_model.metrics),
        "metrics": flatten_metrics(
            {k: v for k, v in reward_model.metrics.items() if k not in tabled}
        ),
        "filters": flatten_metrics(reward_model.data_filters),
        "summary": flatten_metrics(reward_model.data_summary),
        "settings": flatten_metrics(reward_model.config),
        "heartbeat_age": reward_model.heartbeat_age_seconds(),
    }


def finetune_report(run: FineTuneRun) -> dict[str, Any]:
    """What the run page shows besides the curves: stages with their reward models, the
    settings, final figures per stage, and the samples newest first."""
    names = dict(RewardModel.objects.values_list("pk", "name"))
    stages = [
        {
            "number": index + 1,
            "steps": stage["steps"],
            "rewards": [
                (names.get(int(pk), f"#{pk}"), weight)
                for pk, weight in stage.get("rewards", {}).items()
            ],
            "running": run.is_active and index == run.stage,
        }
        for index, stage in enumerate(run.stages)
    ]
    samples = [{"index": index, **sample} for index, sample in enumerate(run.samples)][::-1]
    return {
        "stages": stages,
        "settings": flatten_metrics(run.settings),
        "metrics": flatten_metrics(run.metrics),
        "summary": flatten_metrics(
            {k: v for k, v in run.data_summary.items() if k != "held_out_prompts"}
        ),
        "held_out_prompts": run.data_summary.get("held_out_prompts", []),
        "samples": samples,
        # One chart per attribute: the notes' prompt adherence on training and held-out
        # prompts (reward_hacking.fit_figures), so a taste that moves one attribute shows where.
        "fit_charts": [
            {"part": part, "series": f"fit_{part},heldout_fit_{part}"}
            for part in (*FIT_PARTS, "score")
        ],
    }


def reward_model_for(campaign: Campaign) -> int | None:
    """The newest usable preference reward model that scored this campaign's clips."""
    scored = Pair.objects.filter(campaign=campaign, kind=Pair.Kind.REGULAR).values("track_a_id")
    models = (
        RewardModel.objects.filter(
            kind=RewardModel.Kind.PREFERENCE,
            status=RewardModel.Status.FINISHED,
            scores__track__in=scored,
        )
        .distinct()
        .order_by("-finished_at", "-pk")
    )
    return next((model.pk for model in models[:5] if model.usable), None)


def campaign_clip_reward(campaign: Campaign) -> Callable[[str], Subquery] | None:
    """Active pair selection's reward hook (settings.ACTIVE_SELECTION_REWARD_HOOK): a function
    from a pair's track field ("track_a", "track_b") to that clip's reward under
    `reward_model_for(campaign)`, as a subquery; None while no such model exists."""
    reward_model_id = reward_model_for(campaign)
    if reward_model_id is None:
        return None

    def clip_reward(track_field: str) -> Subquery:
        scores = TrackReward.objects.filter(
            track=OuterRef(track_field), reward_model_id=reward_model_id
        )
        return Subquery(scores.values("value")[:1])

    return clip_reward
