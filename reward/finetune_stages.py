"""The training of a fine-tuning run on a worker: RLOO stage by stage against the rewards of
its reward models, or DPO in one stage. Each stage resumes from its checkpoint and leaves
the tuned generator in its directory; its figures, warnings and held-out samples are recorded
on the run as it goes.

torch is imported inside the functions that train: the web process imports this module
(through reward/finetune.py, to create and cancel runs) and must never load torch.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from reward import jobs
from reward.finetune_data import dpo_pairs, prompt_pool
from reward.finetune_settings import FineTuneError, loop_config
from reward.models import FineTuneRun, RewardModel

if TYPE_CHECKING:
    from reward.learning.rl import RLOOConfig  # torch loads only when a run does

GENERATOR_NAME = "generator.pt"


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


TIME_BUDGET = "time_budget"  # the stopped_reason of a stage whose run ran out of time


class _StageProgress:
    """Maps a stage's own step numbers onto the run's, for one continuous curve, and ends
    the stage (keeping its last step) once the run's `deadline` (time.monotonic) passes."""

    def __init__(
        self,
        heartbeat: jobs.Heartbeat,
        offset: int,
        total: int,
        stage: int,
        deadline: float | None = None,
    ) -> None:
        self.heartbeat, self.offset, self.total, self.stage = heartbeat, offset, total, stage
        self.deadline = deadline

    def __call__(self, step: int, stage_total: int, entry: dict[str, float]) -> None:
        global_step = self.offset + step
        self.heartbeat(global_step, self.total, {**entry, "step": global_step, "stage": self.stage})
        if self.deadline is not None and time.monotonic() > self.deadline:
            from reward.learning.loop import EarlyStop

            raise EarlyStop(TIME_BUDGET)


def _load_backend(path: str | Path):
    from generation.music.learned import SymbolicTransformerBackend

    return SymbolicTransformerBackend.load(path)


def _base_checkpoint(run: FineTuneRun) -> str:
    return run.base_version.backend_config()["checkpoint"]


def stage_rloo_config(
    config: dict[str, Any], stage: dict[str, Any], index: int, weights: dict[str, float]
) -> RLOOConfig:
    """The RLOOConfig of a run's stage `index`, from the run's settings and the stage's
    reward weights (by reward model name): a plan stage takes the plan_ settings."""
    from generation.music.prompt_sampling import PROMPT_VARIANT_AXES
    from reward.learning.rl import RLOOConfig  # torch loads only when a run does

    # Stages stored before plan stages existed trained the whole sequence.
    on_plan = stage.get("part", "all") == "plan"
    prefix = "plan_" if on_plan else ""  # a plan stage's own batch settings
    loop = loop_config(config, steps=stage["steps"], seed=int(config["seed"]) + index)
    if on_plan:
        rate = float(config["plan_learning_rate"])
        loop = replace(loop, learning_rate=rate, min_learning_rate=rate / 10)
    return RLOOConfig(
        loop=loop,
        prompts_per_step=int(config[f"{prefix}prompts_per_step"]),
        samples_per_prompt=int(config[f"{prefix}samples_per_prompt"]),
        part="plan" if on_plan else "all",
        beta=float(config["beta"]),
        kl_loss=float(
            config["kl_loss"]
            if not on_plan or config.get("plan_kl_loss") is None
            else config["plan_kl_loss"]
        ),
        reward_weights=weights,
        kl_limit=config["kl_limit"],
        diversity_floor=config["diversity_floor"],
        guard_action=config["guard_action"],
        # Runs stored before the setting existed used RLOO's advantages.
        estimator=config.get("estimator", "rloo"),
        plan_kl_weight=float(config.get("plan_kl_weight", 0.0)),
        heard_seconds=float(config["clip_seconds"]),
        # Runs stored before the setting did not explore.
        explore_share=float(config.get("explore_share", 0.0)),
        explore_fields=tuple(config.get("explore_fields", PROMPT_VARIANT_AXES)),
        kept_fields=tuple(config.get("kept_fields", ())),
        keep_weight=float(config.get("keep_weight", 0.0)),
    )


def run_rloo_stages(run: FineTuneRun, heartbeat: jobs.Heartbeat) -> Path:
    """Every stage not finished yet, each tuning the generator the stage before it left;
    returns the last stage's generator file."""
    from reward.learning.rl import train_rloo

    config = run.settings
    train_prompts, held_out = prompt_pool(config)
    FineTuneRun.objects.filter(pk=run.pk).update(
        data_summary={"train_prompts": len(train_prompts), "held_out_prompts": held_out}
    )
    reference_path = _base_checkpoint(run)
    offset = 0
    # Per attempt: a run resumed after a crash gets its whole time again.
    max_seconds = float(config.get("max_seconds", 0))  # absent from runs stored before it
    deadline = time.monotonic() + max_seconds if max_seconds else None
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
        rloo = stage_rloo_config(config, stage, index, weights)
        if resumed := jobs.resume_step(stage_dir):
            jobs.job_note_resume(FineTuneRun, run.pk, offset + resumed)
        heartbeat.phase(f"stage {index + 1}/{len(run.stages)}: RLOO")
        started = time.monotonic()
        result = train_rloo(
            rloo,
            policy,
            reference,
            train_prompts,
            held_out,
            reward_function(reward_models, float(config["clip_seconds"]), policy),
            stage_dir,
            on_progress=_StageProgress(heartbeat, offset, run.steps, index, deadline),
            on_checkpoint=_sample_recorder(run, offset, float(config["clip_seconds"]), policy),
        )
        if result.stopped_reason is not None:
            heartbeat.flush()
        _record_stage(run, index, result, seconds=time.monotonic() - started)
        result.policy.save(result_path)
        reference_path, offset = str(result_path), offset + stage["steps"]
    return Path(reference_path)


def _record_stage(run: FineTuneRun, index: int, result: Any, *, seconds: float) -> None:
    """The stage's final figures (its steps among them), why it stopped early if it did,
    which part it trained, and its wall seconds (of this attempt: a stage resumed after a
    crash does not count the time before it)."""
    current = FineTuneRun.objects.get(pk=run.pk)
    metrics = dict(current.metrics)
    metrics[f"stage_{index}"] = result.metrics | {
        "stopped_reason": result.stopped_reason,
        "part": run.stages[index].get("part", "all"),
        "seconds": round(seconds, 1),
    }
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


def run_dpo(run: FineTuneRun, heartbeat: jobs.Heartbeat) -> Path:
    """DPO on the run's pairs in one stage; returns the tuned generator's file."""
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
            loop=loop_config(config, steps=run.steps, seed=int(config["seed"])),
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
