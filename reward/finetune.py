"""Fine-tuning runs: RLOO from reward models (presets R, U, RU after MusicRL) or DPO from stored
preference pairs, as resumable jobs that end by registering a candidate generator version.

torch is imported inside the functions that train: the web process imports this module (to
create and cancel runs) and must never load torch.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings as django_settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from generation.models import GeneratorVersion, Prompt, Track
from generation.music.prompts import prompt_is_held_out, prompt_pools
from ratings.dataset import DataFilters, preference_target, vote_rows
from reward import jobs
from reward.models import FineTuneRun, RewardModel, TrainingJob

if TYPE_CHECKING:
    from reward.learning.loop import LoopConfig

logger = logging.getLogger(__name__)
GENERATOR_NAME = "generator.pt"
ProgressFn = Callable[[int, int, dict[str, float]], None]

# Which reward kinds each MusicRL preset optimises, stage by stage.
PRESET_STAGES: dict[str, list[list[str]]] = {
    FineTuneRun.Preset.R: [[RewardModel.Kind.ADHERENCE, RewardModel.Kind.QUALITY]],
    FineTuneRun.Preset.U: [[RewardModel.Kind.PREFERENCE]],
    FineTuneRun.Preset.RU: [
        [RewardModel.Kind.ADHERENCE, RewardModel.Kind.QUALITY],
        [RewardModel.Kind.PREFERENCE],
    ],
}
DEFAULT_SETTINGS: dict[str, Any] = {
    "learning_rate": 2e-5,
    "min_learning_rate": None,  # where the cosine schedule ends; None: a tenth of the above
    "beta": 0.05,  # KL coefficient in the reward (per sequence)
    "kl_loss": 0.5,  # per-token KL term in the loss (reward/learning/rl.py's module doc)
    "prompts_per_step": 8,
    "samples_per_prompt": 4,
    "checkpoint_every": 10,
    "eval_every": 10,
    "kl_limit": 40.0,  # nats per sequence
    "diversity_floor": 0.5,  # of the diversity at the start
    "guard_action": "warn",  # or "stop"
    "clip_seconds": 10.0,  # what reward models hear of each sample
    "test_share": 0.2,  # prompts held out for the curves and the evaluation campaign
    "split_seed": 0,
    "seed": 0,
    # Prompts RL samples from, and prompts it is judged on (curves and the evaluation
    # campaign): a prompt-dependent taste does not generalise from a few dozen prompts.
    "train_prompts": 2000,
    "held_out_prompts": 64,
    "dpo_beta": 0.1,
    "dpo_batch_size": 8,
    # torch threads for sampling and training. One suits a worker that shares the machine;
    # a run that has the machine to itself (the closed loop) gains from two: an RLOO step of
    # the planned model took 4.6 s on two threads against 7.0 s on one, on an idle 2-core CPU.
    "num_threads": 1,
    # The planner's step relative to the body's (a planned generator; others ignore it).
    # The planner's weights reach only the dozen plan tokens, so a taste that lives in the
    # plan (tempo, register, mode, instruments) moves there without disturbing the notes.
    "planner_lr_scale": 1.0,
}
STRING_SETTINGS = {"guard_action": ("warn", "stop")}


class FineTuneError(ValueError):
    """Bad settings for a run: a 400 for the admin, and nothing is stored."""


def finetune_settings(overrides: dict[str, Any] | None) -> dict[str, Any]:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DEFAULT_SETTINGS))
    if unknown:
        raise FineTuneError(f"unknown settings: {', '.join(unknown)}")
    merged = DEFAULT_SETTINGS | overrides
    for key, value in merged.items():
        if key in STRING_SETTINGS:
            if value not in STRING_SETTINGS[key]:
                raise FineTuneError(f"{key} must be one of {', '.join(STRING_SETTINGS[key])}")
        elif value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise FineTuneError(f"{key} must be a non-negative number")
    if merged["samples_per_prompt"] < 2:
        raise FineTuneError("RLOO needs at least 2 samples per prompt")
    if not 0 < merged["test_share"] < 1:
        raise FineTuneError("test_share must lie strictly between 0 and 1")
    if not 1 <= merged["clip_seconds"] <= 30:
        raise FineTuneError("clip_seconds must lie in [1, 30]")
    if merged["num_threads"] not in range(1, 65):
        raise FineTuneError("num_threads must be a whole number from 1 to 64")
    for pool in ("train_prompts", "held_out_prompts"):
        if merged[pool] is None or int(merged[pool]) != merged[pool] or merged[pool] < 1:
            raise FineTuneError(f"{pool} must be a whole number of at least 1")
    return merged


def _min_learning_rate(config: dict[str, Any]) -> float:
    if config["min_learning_rate"] is None:
        return config["learning_rate"] / 10
    return float(config["min_learning_rate"])


def _loop_config(config: dict[str, Any], *, steps: int, seed: int) -> LoopConfig:
    from reward.learning.loop import LoopConfig

    return LoopConfig(
        steps=steps,
        learning_rate=config["learning_rate"],
        min_learning_rate=_min_learning_rate(config),
        warmup_steps=min(10, max(1, steps // 10)),
        weight_decay=0.0,  # fine-tuning: stay near the starting weights
        checkpoint_every=int(config["checkpoint_every"]),
        eval_every=int(config["eval_every"]),
        seed=seed,
        num_threads=int(config.get("num_threads", 1)),
        # Runs stored before the setting existed stepped every part alike.
        part_lr_scales={"planner": float(config.get("planner_lr_scale", 1.0))},
    )


def latest_usable(kind: str) -> RewardModel | None:
    for reward_model in RewardModel.objects.filter(kind=kind, status="finished").order_by(
        "-finished_at"
    ):
        if reward_model.usable:
            return reward_model
    return None


def preset_stages(preset: str, steps: int) -> list[dict[str, Any]]:
    """The stages of a preset, each with the newest usable reward model of every kind."""
    stages = []
    for kinds in PRESET_STAGES[preset]:
        rewards = {}
        for kind in kinds:
            reward_model = latest_usable(kind)
            if reward_model is None:
                raise FineTuneError(f"preset {preset} needs a usable {kind} reward model")
            rewards[str(reward_model.pk)] = 1.0
        stages.append({"rewards": rewards, "steps": steps})
    return stages


def custom_stage(weights: dict[int, float], steps: int) -> list[dict[str, Any]]:
    if not weights:
        raise FineTuneError("a custom reward mix needs at least one reward model")
    models = RewardModel.objects.in_bulk(list(weights))
    for reward_model_id in weights:
        reward_model = models.get(int(reward_model_id))
        if reward_model is None or not reward_model.usable:
            raise FineTuneError(f"reward model {reward_model_id} is not usable")
    return [{"rewards": {str(k): float(w) for k, w in weights.items()}, "steps": steps}]


def finetune_run_create(
    *,
    name: str,
    base_version: GeneratorVersion,
    algorithm: str,
    steps: int,
    preset: str = FineTuneRun.Preset.CUSTOM,
    reward_weights: dict[int, float] | None = None,
    stage_rewards: list[dict[int, float]] | None = None,
    filters: DataFilters | None = None,
    settings: dict[str, Any] | None = None,
    created_by: AbstractBaseUser | None = None,
    queue: bool = True,
) -> FineTuneRun:
    """Record a run (validated: nothing is stored on bad input); with queue=True a worker on
    the `train` queue runs it. RLOO rewards come from a preset (the newest usable model of
    each kind), from `reward_weights` (one custom stage), or from `stage_rewards` (named
    models per stage, e.g. the R and U models of an RU run)."""
    from reward import tasks

    config = finetune_settings(settings)
    if not name.strip():
        raise FineTuneError("a run needs a name")
    if FineTuneRun.objects.filter(name=name).exists():
        raise FineTuneError(f"a run named {name!r} exists already")
    if base_version.backend != "symbolic" or not base_version.checkpoint:
        raise FineTuneError("fine-tuning needs a learned (symbolic) version with a checkpoint")
    if steps < 1:
        raise FineTuneError("steps must be at least 1")
    if algorithm == FineTuneRun.Algorithm.RLOO:
        if stage_rewards:
            stages = [custom_stage(weights, steps)[0] for weights in stage_rewards]
        elif preset == FineTuneRun.Preset.CUSTOM:
            stages = custom_stage(reward_weights or {}, steps)
        elif preset in PRESET_STAGES:
            stages = preset_stages(preset, steps)
        else:
            raise FineTuneError(f"unknown preset {preset!r}")
    elif algorithm == FineTuneRun.Algorithm.DPO:
        stages = [{"steps": steps}]
    else:
        raise FineTuneError(f"algorithm must be one of {', '.join(FineTuneRun.Algorithm.values)}")
    with transaction.atomic():
        run = FineTuneRun.objects.create(
            name=name,
            base_version=base_version,
            algorithm=algorithm,
            preset=preset if algorithm == FineTuneRun.Algorithm.RLOO else "custom",
            stages=stages,
            steps=sum(stage["steps"] for stage in stages),
            settings=config,
            data_filters=(filters or DataFilters()).to_json(),
            created_by=created_by,
        )
        if queue:
            tasks.finetune_generator.delay_on_commit(run.pk)
    return run


def finetune_run_cancel(*, run: FineTuneRun) -> FineTuneRun:
    jobs.job_cancel(run)
    return run


# --- prompts ------------------------------------------------------------------------------------


def prompt_pool(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts): the curated prompts people wrote, split whole by
    the same rule as reward training, filled up with generated prompts in the way people write
    them (`prompts.prompt_pools`). The held-out prompts feed the curves and the evaluation."""
    curated = list(
        Prompt.objects.filter(source=Prompt.Source.CURATED)
        .order_by("pk")
        .values_list("text", flat=True)
    )
    settings = DEFAULT_SETTINGS | config  # runs stored before the pools had sizes
    try:
        return prompt_pools(
            curated,
            train_count=int(settings["train_prompts"]),
            held_out_count=int(settings["held_out_prompts"]),
            test_share=float(settings["test_share"]),
            split_seed=int(settings["split_seed"]),
            seed=int(settings["seed"]),
        )
    except ValueError as error:
        raise FineTuneError(str(error)) from error


# --- rewards --------------------------------------------------------------------------------------


def reward_function(reward_models: list[RewardModel], clip_seconds: float, backend: Any):
    """RewardFn for RLOO: raw reward per sample per reward model name. Learned models hear the
    sample rendered as the platform renders it (looped to clip_seconds, FluidSynth, -16 LUFS);
    the attribute match and the measured preference model read the sampled notes."""
    import torch

    from generation.music.events import piece_to_events
    from generation.music.render import SAMPLE_RATE, normalize_loudness, render_piece
    from reward.learning.adherence import attribute_match_scores
    from reward.learning.features import log_mel
    from reward.learning.measured import MeasuredPreferenceModel
    from reward.learning.scoring import load_scorer
    from reward.track_scoring import prompt_embeddings

    scorers = {
        model.name: load_scorer(model.scorer_path())
        for model in reward_models
        if model.method == RewardModel.Method.LEARNED
    }
    measured = {
        model.name: MeasuredPreferenceModel.load(model.scorer_path())
        for model in reward_models
        if model.method == RewardModel.Method.MEASURED
    }

    def rewards(samples: list[Any]) -> dict[str, torch.Tensor]:
        prompts = [sample.prompt for sample in samples]
        out: dict[str, torch.Tensor] = {}
        mels = None
        if scorers:
            mels = []
            for sample in samples:
                piece = backend.clip_piece(sample, clip_seconds)
                audio = render_piece(piece, duration_seconds=clip_seconds)
                audio = normalize_loudness(audio, SAMPLE_RATE, -16.0, -1.5)
                mels.append(log_mel(audio, SAMPLE_RATE))
            embeddings = prompt_embeddings(prompts)
        events = [piece_to_events(sample.piece) for sample in samples]
        for model in reward_models:
            if model.name in scorers:
                out[model.name] = scorers[model.name].score(mels, embeddings).float()
            elif model.name in measured:
                out[model.name] = torch.tensor(measured[model.name].scores(prompts, events))
            else:
                out[model.name] = torch.tensor(attribute_match_scores(prompts, events))
        return out

    return rewards


# --- the job --------------------------------------------------------------------------------------


def finetune_run_execute(
    *, run_id: int, on_progress: ProgressFn | None = None
) -> FineTuneRun | None:
    """Run every remaining stage (resuming inside a stage from its checkpoint), then register
    the candidate version. None when another worker has the run or it is over already."""
    if not jobs.job_claim(FineTuneRun, run_id):
        return None
    run = FineTuneRun.objects.select_related("base_version").get(pk=run_id)
    heartbeat = jobs.Heartbeat(FineTuneRun, run.pk, curve=run.curve, on_step=on_progress)
    try:
        if run.algorithm == FineTuneRun.Algorithm.DPO:
            final = _run_dpo(run, heartbeat)
        else:
            final = _run_rloo_stages(run, heartbeat)
        _register_candidate(run, final)
    except jobs.JobLost:
        return None
    except jobs.JobCancelled:
        jobs.job_stop(FineTuneRun, run.pk, status=TrainingJob.Status.CANCELLED)
    except Exception:
        jobs.job_stop(FineTuneRun, run.pk, status=TrainingJob.Status.FAILED,
                      error=traceback.format_exc())  # fmt: skip
        raise
    run.refresh_from_db()
    return run


class _StageProgress:
    """Maps a stage's own step numbers onto the run's, for one continuous curve."""

    def __init__(self, heartbeat: jobs.Heartbeat, offset: int, total: int, stage: int) -> None:
        self.heartbeat, self.offset, self.total, self.stage = heartbeat, offset, total, stage

    def __call__(self, step: int, stage_total: int, entry: dict[str, float]) -> None:
        global_step = self.offset + step
        self.heartbeat(global_step, self.total, {**entry, "step": global_step, "stage": self.stage})


def _load_backend(path: str | Path):
    from generation.music.learned import SymbolicTransformerBackend

    return SymbolicTransformerBackend.load(path)


def _base_checkpoint(run: FineTuneRun) -> str:
    return run.base_version.backend_config()["checkpoint"]


def _run_rloo_stages(run: FineTuneRun, heartbeat: jobs.Heartbeat) -> Path:
    from reward.learning.rl import RLOOConfig, train_rloo

    config = run.settings
    train_prompts, held_out = prompt_pool(config)
    FineTuneRun.objects.filter(pk=run.pk).update(
        data_summary={"train_prompts": len(train_prompts), "held_out_prompts": held_out}
    )
    reference_path = _base_checkpoint(run)
    offset = 0
    for index, stage in enumerate(run.stages):
        stage_dir = run.directory / f"stage-{index}"
        result_path = stage_dir / GENERATOR_NAME
        if result_path.exists():  # finished before a crash
            reference_path, offset = str(result_path), offset + stage["steps"]
            continue
        FineTuneRun.objects.filter(pk=run.pk).update(stage=index)
        reward_models = list(RewardModel.objects.filter(pk__in=[int(k) for k in stage["rewards"]]))
        weights = {m.name: float(stage["rewards"][str(m.pk)]) for m in reward_models}
        heartbeat.phase(f"stage {index + 1}/{len(run.stages)}: loading the generator")
        policy = _load_backend(reference_path)
        reference = _load_backend(reference_path)
        rloo = RLOOConfig(
            loop=_loop_config(config, steps=stage["steps"], seed=int(config["seed"]) + index),
            prompts_per_step=int(config["prompts_per_step"]),
            samples_per_prompt=int(config["samples_per_prompt"]),
            beta=float(config["beta"]),
            kl_loss=float(config["kl_loss"]),
            reward_weights=weights,
            kl_limit=config["kl_limit"],
            diversity_floor=config["diversity_floor"],
            guard_action=config["guard_action"],
        )
        if resumed := jobs.resume_step(stage_dir):
            jobs.job_note_resume(FineTuneRun, run.pk, offset + resumed)
        heartbeat.phase(f"stage {index + 1}/{len(run.stages)}: RLOO")
        result = train_rloo(
            rloo,
            policy,
            reference,
            train_prompts,
            held_out,
            reward_function(reward_models, float(config["clip_seconds"]), policy),
            stage_dir,
            on_progress=_StageProgress(heartbeat, offset, run.steps, index),
            on_checkpoint=_sample_recorder(run, offset, float(config["clip_seconds"]), policy),
        )
        _record_stage(run, index, result)
        result.policy.save(result_path)
        reference_path, offset = str(result_path), offset + stage["steps"]
    return Path(reference_path)


def _record_stage(run: FineTuneRun, index: int, result: Any) -> None:
    current = FineTuneRun.objects.get(pk=run.pk)
    metrics = dict(current.metrics)
    metrics[f"stage_{index}"] = result.metrics | {"stopped_reason": result.stopped_reason}
    FineTuneRun.objects.filter(pk=run.pk).update(
        metrics=metrics, warnings=[*current.warnings, *result.warnings]
    )


def _sample_recorder(run: FineTuneRun, offset: int, clip_seconds: float, backend: Any):
    """Render a few held-out samples at every checkpoint, for the run page's players."""

    def record(step: int, samples: list[Any]) -> None:
        entries = []
        for number, sample in enumerate(samples[:2]):
            clip = backend.render(sample, clip_seconds)
            name = f"finetune/{run.pk}/step-{offset + step}-{number}.{clip.file_extension}"
            default_storage.delete(name)
            saved = default_storage.save(name, ContentFile(clip.audio_bytes))
            entries.append({"step": offset + step, "prompt": sample.prompt, "file": saved})
        current = FineTuneRun.objects.values_list("samples", flat=True).get(pk=run.pk)
        kept = [entry for entry in current if entry["step"] != offset + step]
        FineTuneRun.objects.filter(pk=run.pk).update(samples=kept + entries)

    return record


def dpo_pairs(run: FineTuneRun, policy: Any) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """(train pairs, held-out pairs, summary) from stored votes on two tracks of the base
    version: the chosen and rejected clips' notes re-encoded as the policy's tokens."""
    from reward.learning.dpo import DPOPair

    filters = DataFilters.from_json(run.data_filters)
    rows = [row for row in vote_rows(filters) if preference_target(row) in (0.0, 1.0)]
    base_name = run.base_version.name
    rows = [r for r in rows if r["version_a"] == base_name and r["version_b"] == base_name]
    tracks = Track.objects.in_bulk({r[k] for r in rows for k in ("track_a_id", "track_b_id")})
    train, held_out = [], []
    for row in rows:
        winner, loser = ("track_a_id", "track_b_id")
        if preference_target(row) == 0.0:
            winner, loser = loser, winner
        chosen, rejected = tracks[row[winner]], tracks[row[loser]]
        prompt = row["prompt_text"]
        pair = DPOPair(
            prompt=prompt,
            chosen=policy.sequence_for(prompt, chosen.events, chosen.attributes),
            rejected=policy.sequence_for(prompt, rejected.events, rejected.attributes),
        )
        side = held_out if prompt_is_held_out(
            row["prompt_text"], test_share=run.settings["test_share"],
            split_seed=run.settings["split_seed"],
        ) else train  # fmt: skip
        side.append(pair)
    summary = {"decisive_votes": len(rows), "train_pairs": len(train), "held_out": len(held_out)}
    return train, held_out, summary


def _run_dpo(run: FineTuneRun, heartbeat: jobs.Heartbeat) -> Path:
    from reward.learning.dpo import DPOConfig, train_dpo

    config = run.settings
    result_path = run.directory / "stage-0" / GENERATOR_NAME
    if result_path.exists():
        return result_path
    heartbeat.phase("loading the generator and the pairs")
    policy = _load_backend(_base_checkpoint(run))
    reference = _load_backend(_base_checkpoint(run))
    train, held_out, summary = dpo_pairs(run, policy)
    if not train:
        raise FineTuneError("no decisive votes on two clips of the base version match the filters")
    FineTuneRun.objects.filter(pk=run.pk).update(data_summary=summary)
    jobs.job_note_resume(FineTuneRun, run.pk, jobs.resume_step(run.directory / "stage-0"))
    heartbeat.phase("DPO")
    result = train_dpo(
        DPOConfig(
            loop=_loop_config(config, steps=run.steps, seed=int(config["seed"])),
            beta=float(config["dpo_beta"]),
            batch_size=int(config["dpo_batch_size"]),
        ),
        policy,
        reference,
        train,
        held_out,
        run.directory / "stage-0",
        on_progress=_StageProgress(heartbeat, 0, run.steps, 0),
    )
    FineTuneRun.objects.filter(pk=run.pk).update(metrics={"stage_0": result.metrics})
    result.policy.save(result_path)
    return result_path


def _register_candidate(run: FineTuneRun, generator_path: Path) -> GeneratorVersion:
    """The tuned generator as a candidate version whose parent is the base."""
    base = run.base_version
    checkpoint = generator_path
    # A path inside the project is stored relative to it, as the shipped generator's is.
    with contextlib.suppress(ValueError):
        checkpoint = generator_path.relative_to(django_settings.BASE_DIR)
    config = {key: value for key, value in base.config.items() if key != "checkpoint"}
    with transaction.atomic():
        version, _ = GeneratorVersion.objects.get_or_create(
            name=f"{base.name}-{run.algorithm}{run.pk}",
            defaults={
                "backend": base.backend,
                "config": config,
                "checkpoint": str(checkpoint),
                "parent": base,
                "status": GeneratorVersion.Status.CANDIDATE,
                "metrics": {"fine_tune_run": run.pk, "preset": run.preset},
            },
        )
        jobs.job_finish(FineTuneRun, run.pk, result_version=version, step=run.steps)
    return version


def evaluation_for_run(
    *,
    run: FineTuneRun,
    created_by: AbstractBaseUser | None = None,
    votes_per_item: int = 3,
    min_listen_seconds: float = 5.0,
    queue: bool = True,
):
    """The run's evaluate campaign (created once): its candidate against its parent on the
    run's held-out prompts, side by side, as MusicRL compared its models."""
    from reward.evaluations import evaluation_create

    existing = run.evaluations.order_by("pk").first()
    if existing is not None:
        return existing
    prompts = run.data_summary.get("held_out_prompts") or prompt_pool(run.settings)[1]
    return evaluation_create(
        candidate=run.result_version,
        baseline=run.base_version,
        prompt_texts=prompts,
        fine_tune_run=run,
        votes_per_item=votes_per_item,
        clip_seconds=float(run.settings["clip_seconds"]),
        min_listen_seconds=min_listen_seconds,
        created_by=created_by,
        queue=queue,
    )
