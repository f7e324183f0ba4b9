"""The trainers of reward models, one per kind and method: each reads its model's rows, fits
the model and records the result. The rows a model trains on are frozen into its directory
at the first attempt, so a resumed job sees exactly the same data, and their sha256 is
recorded so a model can be traced to its dataset.

torch is imported inside the functions that train: the web process imports this module
(through reward/training.py, to create and cancel jobs) and must never load torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from generation.models import Track
from ratings.dataset import DataFilters, rating_rows, rows_sha256, vote_rows
from reward import jobs
from reward.models import RewardModel
from reward.training_results import reward_model_finish, sectioned_metrics
from reward.training_sets import preference_pairs, rating_targets
from reward.training_settings import RewardModelError

if TYPE_CHECKING:
    from reward.learning.data import PreferenceSet

ROWS_NAME = "rows.jsonl"
# The measured-feature model's votes are also judged five-fold by prompt over all of them
# (`out_of_fold_margins`): what the closed loop asks of the votes, is there a taste at all.
CROSS_VALIDATION_FOLDS = 5


# --- data -------------------------------------------------------------------------------------


def _frozen_rows(reward_model: RewardModel, heartbeat: jobs.Heartbeat, source) -> list[dict]:
    """The rows this model trains on: read from the database at the first attempt and stored
    in its directory, then read back from there by every resumed attempt."""
    path = reward_model.directory / ROWS_NAME
    if path.exists():
        return [json.loads(line) for line in path.read_text().splitlines()]
    heartbeat.phase("reading the training data")
    rows = list(source(DataFilters.from_json(reward_model.data_filters)))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))
    temporary.replace(path)
    return rows


def _clip_table(track_ids: list[int], prompt_texts: list[str], heartbeat: jobs.Heartbeat):
    from reward.learning.data import ClipTable
    from reward.track_scoring import prompt_embeddings, track_log_mels

    heartbeat.phase(f"computing log-mel features of {len(track_ids)} clips")
    tracks = Track.objects.in_bulk(track_ids)
    mels = track_log_mels([tracks[track_id] for track_id in track_ids])
    heartbeat.phase("embedding the prompts")
    return ClipTable(mels=mels, prompt_embeddings=prompt_embeddings(prompt_texts, exact=True))


# --- the trainers -----------------------------------------------------------------------------


def _loop_config(reward_model: RewardModel):
    from reward.learning.loop import LoopConfig

    config = reward_model.config
    return LoopConfig(
        steps=reward_model.steps,
        learning_rate=config["learning_rate"],
        min_learning_rate=config["learning_rate"] / 10,
        warmup_steps=min(20, max(1, reward_model.steps // 10)),
        checkpoint_every=int(config["checkpoint_every"]),
        eval_every=int(config["eval_every"]),
        seed=int(config["seed"]),
    )


def _record_start(reward_model: RewardModel, summary: dict[str, Any], rows: list[dict]) -> None:
    RewardModel.objects.filter(pk=reward_model.pk).update(
        data_summary=summary | {"rows_sha256": rows_sha256(rows), "rows_file": ROWS_NAME}
    )


def _note_resume(reward_model: RewardModel, resumed_from: int) -> None:
    jobs.job_note_resume(RewardModel, reward_model.pk, resumed_from)


def initial_audio_encoder(config: dict[str, Any]) -> dict | None:
    """The music tower of the adherence model named by `encoder_from`, as the starting audio
    encoder of a preference or quality model (None: start from scratch)."""
    source_id = int(config.get("encoder_from") or 0)
    if not source_id:
        return None
    source = RewardModel.objects.filter(pk=source_id).first()
    _require(
        source is not None
        and source.usable
        and source.kind == RewardModel.Kind.ADHERENCE
        and source.method == RewardModel.Method.LEARNED,
        f"encoder_from={source_id} is not a usable learned adherence model",
    )
    import torch

    payload = torch.load(source.scorer_path(), map_location="cpu", weights_only=True)
    prefix = "audio."
    return {
        key.removeprefix(prefix): value
        for key, value in payload["state_dict"].items()
        if key.startswith(prefix)
    }


def _train_preference(reward_model: RewardModel, heartbeat: jobs.Heartbeat) -> None:
    from reward.learning.data import PreferenceSet
    from reward.learning.preference import PreferenceConfig, train_preference

    rows = _frozen_rows(reward_model, heartbeat, vote_rows)
    config = reward_model.config
    data = preference_pairs(rows, test_share=config["test_share"], split_seed=config["split_seed"])
    _require(data.summary["train_pairs"] > 0, "no training pairs match the data filters")
    _require(data.summary["test_pairs"] > 0, "no held-out pairs: add prompts or raise test_share")
    _record_start(reward_model, data.summary, rows)
    clips = _clip_table(data.track_ids, data.prompt_texts, heartbeat)
    _note_resume(reward_model, jobs.resume_step(reward_model.directory))
    heartbeat.phase("training")
    train, test = PreferenceSet(**data.train), PreferenceSet(**data.test)
    trained = train_preference(
        PreferenceConfig(
            loop=_loop_config(reward_model),
            batch_size=int(config["batch_size"]),
            crop_seconds=float(config["crop_seconds"]),
        ),
        clips,
        train,
        test,
        reward_model.directory,
        on_progress=heartbeat,
        initial_audio=initial_audio_encoder(config),
    )
    metrics = sectioned_metrics(trained.metrics)
    metrics["noise_ceiling"] = _noise_ceiling(train, test, heldout=metrics.pop("noise_ceiling"))
    reward_model_finish(
        reward_model,
        fitted=trained.model,
        metrics=metrics,
        track_ids=data.track_ids,
        heartbeat=heartbeat,
    )


def _train_quality(reward_model: RewardModel, heartbeat: jobs.Heartbeat) -> None:
    from reward.learning.audio_quality import QualityConfig, train_quality
    from reward.learning.data import RatingSet

    rows = _frozen_rows(reward_model, heartbeat, rating_rows)
    config = reward_model.config
    data = rating_targets(rows, test_share=config["test_share"], split_seed=config["split_seed"])
    _require(data.summary["train_ratings"] > 0, "no 1-5 ratings match the data filters")
    _require(data.summary["test_ratings"] > 0, "no held-out ratings: add prompts or test_share")
    _record_start(reward_model, data.summary, rows)
    clips = _clip_table(data.track_ids, data.prompt_texts, heartbeat)
    _note_resume(reward_model, jobs.resume_step(reward_model.directory))
    heartbeat.phase("training")
    trained = train_quality(
        QualityConfig(
            loop=_loop_config(reward_model),
            batch_size=int(config["batch_size"]),
            crop_seconds=float(config["crop_seconds"]),
        ),
        clips,
        RatingSet(**data.train),
        RatingSet(**data.test),
        reward_model.directory,
        on_progress=heartbeat,
        initial_audio=initial_audio_encoder(config),
    )
    reward_model_finish(
        reward_model,
        fitted=trained.model,
        metrics=sectioned_metrics(trained.metrics),
        track_ids=data.track_ids,
        heartbeat=heartbeat,
    )


def _adherence_config(reward_model: RewardModel):
    from reward.learning.adherence import AdherenceConfig

    config = reward_model.config
    return AdherenceConfig(
        loop=_loop_config(reward_model),
        batch_size=int(config["batch_size"]),
        corpus_size=int(config["corpus_size"]),
        held_out_size=int(config["held_out_size"]),
        clip_seconds=float(config["clip_seconds"]),
        seed=int(config["seed"]),
    )


def _adherence_corpus(heartbeat: jobs.Heartbeat, config, split: str):
    """One split of the composer's captioned corpus, rendered once and cached in REWARD_DIR
    for every later adherence model with the same corpus settings."""
    from django.conf import settings

    from generation.music.text_encoder import get_text_encoder
    from reward.learning.adherence import build_corpus

    def report(done: int, total: int, _entry: dict) -> None:
        if done == total or done % 16 == 0:
            heartbeat.phase(f"rendering the {split} corpus: {done}/{total} clips")

    cache = Path(settings.REWARD_DIR) / "corpus"
    return build_corpus(config, split, cache, get_text_encoder(), on_progress=report)


def _train_adherence(reward_model: RewardModel, heartbeat: jobs.Heartbeat) -> None:
    from reward.learning.adherence import attribute_match_retrieval, train_adherence

    config = _adherence_config(reward_model)
    train = _adherence_corpus(heartbeat, config, "train")
    test = _adherence_corpus(heartbeat, config, "test")
    rows = _frozen_rows(reward_model, heartbeat, vote_rows)
    _record_start(reward_model, {"corpus": config.corpus_size, "held_out": config.held_out_size,
                                 "scored_votes": len(rows)}, rows)  # fmt: skip
    _note_resume(reward_model, jobs.resume_step(reward_model.directory))
    heartbeat.phase("training")
    trained = train_adherence(config, train, test, reward_model.directory, on_progress=heartbeat)
    metrics = sectioned_metrics(trained.metrics, retrieval=True)
    metrics["attribute_match"] = attribute_match_retrieval(test)
    reward_model_finish(
        reward_model,
        fitted=trained.model,
        metrics=metrics,
        track_ids=_tracks_in(rows),
        heartbeat=heartbeat,
    )


def _attribute_match(reward_model: RewardModel, heartbeat: jobs.Heartbeat) -> None:
    from reward.learning.adherence import attribute_match_retrieval

    config = _adherence_config(reward_model)
    test = _adherence_corpus(heartbeat, config, "test")
    rows = _frozen_rows(reward_model, heartbeat, vote_rows)
    _record_start(reward_model, {"held_out": config.held_out_size, "scored_votes": len(rows)},
                  rows)  # fmt: skip
    reward_model_finish(
        reward_model,
        fitted=None,  # nothing is fitted: the match is computed from the notes
        metrics={"heldout": attribute_match_retrieval(test)},
        track_ids=_tracks_in(rows, symbolic_only=True),
        heartbeat=heartbeat,
    )


def _train_measured(reward_model: RewardModel, heartbeat: jobs.Heartbeat) -> None:
    """Bradley-Terry over measured features (reward/learning/measured.py): one convex fit on
    the training votes, judged on the held-out prompts' votes like the learned model."""
    from reward.learning.data import PreferenceSet
    from reward.learning.measured import (
        MeasuredPreferenceConfig,
        features_matrix,
        fit_measured_preference,
        fit_supported,
        log_likelihood_per_vote,
        out_of_fold_margins,
        weight_intervals,
    )
    from reward.learning.metrics import log_likelihood_gain, pairwise_accuracy

    rows = _frozen_rows(reward_model, heartbeat, vote_rows)
    config = reward_model.config
    # Only clips with notes can be measured: audio-only tracks are left out and counted.
    symbolic = set(_tracks_in(rows, symbolic_only=True))
    measurable = [r for r in rows if {r["track_a_id"], r["track_b_id"]} <= symbolic]
    data = preference_pairs(
        measurable, test_share=config["test_share"], split_seed=config["split_seed"]
    )
    data.summary["not_measurable"] = len(rows) - len(measurable)
    _require(data.summary["train_pairs"] > 0, "no training pairs of symbolic clips match")
    _require(data.summary["test_pairs"] > 0, "no held-out pairs: add prompts or raise test_share")
    _record_start(reward_model, data.summary, rows)
    heartbeat.phase(f"measuring {len(data.track_ids)} clips")
    tracks = Track.objects.select_related("prompt").in_bulk(data.track_ids)
    ordered = [tracks[track_id] for track_id in data.track_ids]
    features = features_matrix([t.prompt.text for t in ordered], [t.events for t in ordered])
    heartbeat.phase("fitting")
    train, test = PreferenceSet(**data.train), PreferenceSet(**data.test)

    def side(votes: PreferenceSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return features[votes.clip_a.numpy()], features[votes.clip_b.numpy()], votes.target.numpy()

    fit_config = MeasuredPreferenceConfig(l2=config["l2"])
    support_error = float(config.get("support_error", 0.0))  # absent from older jobs
    two_prompts = len(set(train.prompt.tolist())) >= 2
    _require(two_prompts or not support_error, "choosing features needs votes on two prompts")
    if support_error:
        heartbeat.phase("fitting, bootstrapping the weights, keeping the supported ones")
        chosen = fit_supported(*side(train), train.prompt.numpy(), fit_config, error=support_error)
        model, fit, intervals = chosen.model, chosen.report, chosen.intervals
    else:
        model, fit = fit_measured_preference(*side(train), fit_config)
        intervals = None
        if two_prompts:
            heartbeat.phase("bootstrapping the weights")
            intervals = weight_intervals(*side(train), train.prompt.numpy(), fit_config)
    metrics: dict[str, Any] = {"fit": fit, "weights": model.weights_by_feature()}
    if intervals is not None:
        # The intervals are those of the fit on every feature: they say what is supported.
        metrics["weight_intervals"] = {name: list(bounds) for name, bounds in intervals.items()}
    if support_error:
        metrics["supported_features"] = {
            "error": support_error,
            "z": chosen.supported,
            "weights_before": chosen.full.weights_by_feature(),
        }
    for name, votes in (("train", train), ("heldout", test)):
        features_a, features_b, targets = side(votes)
        margins = model.reward(features_a) - model.reward(features_b)
        accuracy = pairwise_accuracy(margins, targets, votes.group.numpy())
        gain = log_likelihood_gain(margins, targets, votes.group.numpy())
        metrics[name] = {
            "votes": len(votes),
            "accuracy": accuracy["accuracy"],
            "accuracy_ci": [accuracy["low"], accuracy["high"]],
            "decisive": accuracy["n"],
            "log_loss": -log_likelihood_per_vote(model, features_a, features_b, targets),
            "gain_over_chance": gain["gain"],
            "gain_over_chance_ci": [gain["low"], gain["high"]],
        }
        metrics[name]["agreement_pairs_accuracy"] = _agreement_pairs_accuracy(
            margins, targets, votes.group.numpy()
        )
    metrics["noise_ceiling"] = _noise_ceiling(train, test)
    every = [np.concatenate(parts) for parts in zip(side(train), side(test), strict=True)]
    prompts = np.concatenate([train.prompt.numpy(), test.prompt.numpy()])
    if len(np.unique(prompts)) >= CROSS_VALIDATION_FOLDS:
        heartbeat.phase("cross-validating")
        groups = np.concatenate([train.group.numpy(), test.group.numpy()])
        margins = out_of_fold_margins(
            *every, prompts, fit_config, folds=CROSS_VALIDATION_FOLDS, support_error=support_error
        )
        accuracy = pairwise_accuracy(margins, every[2], groups)
        gain = log_likelihood_gain(margins, every[2], groups)
        metrics["cross_validated"] = {
            "folds": CROSS_VALIDATION_FOLDS,
            "votes": len(margins),
            "accuracy": accuracy["accuracy"],
            "accuracy_ci": [accuracy["low"], accuracy["high"]],
            "decisive": accuracy["n"],
            "gain_over_chance": gain["gain"],
            "gain_over_chance_ci": [gain["low"], gain["high"]],
            # Every vote predicted by a model that never saw its prompt, so it can be set
            # beside the raters' agreement on every pair (noise_ceiling["all"]), not only on
            # the held-out fifth's.
            "agreement_pairs_accuracy": _agreement_pairs_accuracy(margins, every[2], groups),
        }
    reward_model_finish(
        reward_model, fitted=model, metrics=metrics, track_ids=data.track_ids, heartbeat=heartbeat
    )


def _agreement_pairs_accuracy(
    margins: np.ndarray, targets: np.ndarray, groups: np.ndarray
) -> float | None:
    """The accuracy on the votes the raters' agreement is measured on (None: there are none)."""
    from reward.learning.metrics import agreement_votes, pairwise_accuracy

    counted = agreement_votes(targets, groups)
    if not counted.any():
        return None
    return pairwise_accuracy(margins[counted], targets[counted], groups[counted])["accuracy"]


def _noise_ceiling(
    train: PreferenceSet, test: PreferenceSet, *, heldout: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The raters' own agreement, against which a preference model's accuracy is read: on the
    held-out pairs (`heldout`, when the fit measured it already) and on all pairs."""
    from reward.learning.metrics import rater_agreement

    return {
        "heldout": rater_agreement(test.votes_by_group()) if heldout is None else heldout,
        # Prompts are split whole, so no pair has votes on both sides: the groups just merge.
        "all": rater_agreement(train.votes_by_group() | test.votes_by_group()),
    }


def _tracks_in(rows: list[dict[str, Any]], *, symbolic_only: bool = False) -> list[int]:
    ids = {row[key] for row in rows for key in ("track_a_id", "track_b_id") if row[key]}
    if symbolic_only:
        ids = set(Track.objects.filter(pk__in=ids).exclude(events=[]).values_list("pk", flat=True))
    return sorted(ids)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RewardModelError(message)


TRAINERS: dict[tuple[str, str], Callable[[RewardModel, jobs.Heartbeat], None]] = {
    (RewardModel.Kind.PREFERENCE, RewardModel.Method.LEARNED): _train_preference,
    (RewardModel.Kind.QUALITY, RewardModel.Method.LEARNED): _train_quality,
    (RewardModel.Kind.ADHERENCE, RewardModel.Method.LEARNED): _train_adherence,
    (RewardModel.Kind.ADHERENCE, RewardModel.Method.ATTRIBUTE_MATCH): _attribute_match,
    (RewardModel.Kind.PREFERENCE, RewardModel.Method.MEASURED): _train_measured,
}
