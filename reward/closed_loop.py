"""The whole MusicRL cycle on this machine, with simulated raters voting through the real HTTP
API: collect campaign -> votes -> the data's snapshot -> reward models -> RL -> evaluation
campaign judged by the same simulated rater population -> report.

The collect campaigns teach: half their pairs set a clip against a variant of it changed along
one audible axis. When no preference model beats chance on votes on prompts it never saw, or
one does only barely, the loop collects another round (up to the budget), all of whose pairs
are variants; if still none beats chance, it stops and says why (`closed_loop_objective`): it
never optimises what the votes do not support. How much each stage does is the budget's
(`closed_loop_budgets`).

Every stage leaves the platform's own objects behind (campaigns, votes, reward models, a
fine-tuning run, a candidate version, an evaluation), exactly as if people had done it in the
browser; generation runs in this process instead of on a worker so the command needs nothing
else running.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from django.db import connections
from django.db.models import F, Sum

from generation.models import GeneratorVersion
from generation.music.backends import SHIPPED_GENERATOR, get_backend
from generation.music.evaluation import FIT_PARTS, composer_ceiling
from generation.music.variants import VARIANT_AXES
from generation.services import shipped_version_register
from ratings.campaigns import campaign_create, campaign_generate_prompts, campaign_votes_extend
from ratings.dataset import DataFilters, rows_sha256, vote_rows
from ratings.models import Campaign
from ratings.simulation.local_server import LocalServer
from ratings.simulation.raters import simulated_raters_build, simulated_raters_ensure
from ratings.simulation.swarm import RaterSwarm, SimulationConfig
from ratings.simulation.tastes import PreferenceFn
from reward import finetune, finetune_results, training
from reward.closed_loop_budgets import BUDGETS, Budget
from reward.closed_loop_objective import (
    OBJECTIVES,
    Decision,
    TasteFields,
    against_the_raters,
    objective_decide,
    raters_agreement_gap,
    taste_fields,
)
from reward.closed_loop_table import presets_table, table_lines
from reward.finetune_stages import TIME_BUDGET
from reward.learning.measured import SUPPORT_ERROR
from reward.models import Evaluation, FineTuneRun, RewardModel

logger = logging.getLogger(__name__)
# MusicRL's models: R (prompt adherence), U (the raters' taste), RU (U started from R's result).
PRESETS = ("R", "U", "RU")
Say = Callable[[str], None]


def base_version() -> GeneratorVersion:
    """The shipped learned generator, registered once (the loop tunes a learned model)."""
    version = shipped_version_register()
    if version is None:
        raise FileNotFoundError(f"{SHIPPED_GENERATOR} is missing")
    return version


def loop_prompts(count: int, seed: int, *, skip: int = 0) -> list[str]:
    """Prompts as people write them (the pretraining corpus's short-prompt style); skip: the
    first prompts of the same stream, already used by earlier collection rounds."""
    from generation.music.prompt_sampling import random_attributes, short_prompt

    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < skip + count:
        text = short_prompt(random_attributes(rng), rng)
        if text not in texts:
            texts.append(text)
    return texts[skip:]


def generate(campaign: Campaign, say: Say) -> None:
    started = time.monotonic()
    prompt_ids = list(campaign.prompts.order_by("pk").values_list("pk", flat=True))
    campaign_generate_prompts(campaign_id=campaign.pk, prompt_ids=prompt_ids)
    campaign.refresh_from_db()
    say(f"  {campaign.generation_done} clips in {time.monotonic() - started:.0f} s")


def vote(
    campaign: Campaign,
    *,
    server: LocalServer,
    preference: PreferenceFn,
    budget: Budget,
    seed: int,
    say: Say,
) -> int:
    accounts = simulated_raters_ensure(campaign_id=campaign.pk, count=budget.raters)
    raters = simulated_raters_build(accounts=accounts, noise=1.0, careless_fraction=0.0, seed=seed)
    wanted = campaign.pairs.aggregate(left=Sum(F("votes_wanted") - F("vote_count")))["left"] or 0
    report = RaterSwarm(
        config=SimulationConfig(
            campaign_id=campaign.pk,
            votes=wanted,
            base_url=server.url,
            preference=preference,
            concurrency=min(budget.raters, 12),
        ),
        raters=raters,
    ).run()
    connections.close_all()
    say(
        f"  {report.votes_cast} votes by {len(report.raters_voted)} raters in "
        f"{report.elapsed_seconds:.0f} s"
    )
    if report.server_errors:
        raise RuntimeError(f"the API answered with server errors: {report.server_errors}")
    return report.votes_cast


def train_reward(
    name: str,
    kind: str,
    method: str,
    campaigns: list[Campaign],
    steps: int,
    settings_: dict[str, Any],
    say: Say,
) -> RewardModel:
    filters = (
        DataFilters(campaign_ids=tuple(c.pk for c in campaigns)) if campaigns else DataFilters()
    )
    model = training.reward_model_create(
        name=name,
        kind=kind,
        method=method,
        steps=steps,
        filters=filters,
        settings=settings_,
        queue=False,
    )
    model = training.reward_model_execute(reward_model_id=model.pk)
    if model is None or model.status != RewardModel.Status.FINISHED:
        raise RuntimeError(f"reward model {name} did not finish: {model and model.error}")
    say(f"  {name}: {model.metrics.get('heldout', {})}")
    return model


def presets_problem(presets: tuple[str, ...], objective: str) -> str | None:
    """Why these presets cannot run (None: they can): some of R, U and RU, RU only with R
    (it starts from R's result), and the objective left to auto (U and RU need the
    preference model the votes support)."""
    if not presets or set(presets) - set(PRESETS) or ("RU" in presets and "R" not in presets):
        return f"presets are some of {','.join(PRESETS)} (RU needs R), e.g. R,U,RU"
    if objective != "auto":
        return "presets decide the objectives themselves: leave the objective to auto"
    return None


def closed_loop_run(
    *,
    preference: PreferenceFn,
    preference_name: str,
    budget_name: str,
    seed: int = 0,
    objective: str = "auto",
    presets: tuple[str, ...] | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Run the cycle once; returns the evaluation figures (and the objects it made), or,
    when the votes support no taste, why it stopped (`stopped`) and no candidate.

    presets (any of R, U, RU): instead of the one run the objective decides, one run per
    preset, each judged against the base, and RU against R: MusicRL's table (`table`)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    if presets is not None and (problem := presets_problem(presets, objective)):
        raise ValueError(problem)
    budget = BUDGETS[budget_name]
    tag = f"loop-{int(time.time())}"
    started = time.monotonic()
    stages: dict[str, float] = {}

    def stage(name: str) -> None:
        stages[name] = round(time.monotonic() - started, 1)
        say(f"[{stages[name]:>6.0f} s] {name}")

    base = base_version()
    result: dict[str, Any] = {
        "preference": preference_name,
        "budget": budget_name,
        "budget_settings": asdict(budget),
        "objective": objective,
        "baseline": base.name,
        "stage_started_at_seconds": stages,
    }
    if budget.most_votes() < budget.audio_min_votes:
        say(
            f"  the audio preference network is not trained: this budget collects at most "
            f"{budget.most_votes()} votes, and it needs {budget.audio_min_votes} to beat "
            "chance; the measured-feature model is trained on every round"
        )
    with LocalServer() as server:
        collects, reward_models, decision = _collect_until_decided(
            server=server, preference=preference, budget=budget, objective=objective,
            base=base, tag=tag, seed=seed, result=result, stage=stage, say=say,
        )  # fmt: skip
        result |= {
            "collect_rounds": len(collects),
            "decision": {"action": decision.action, "preset": decision.preset,
                         "reason": decision.reason},
            "reward_models": _reward_model_figures(reward_models),
        }  # fmt: skip
        if decision.action == "stop":
            stage("done")
            return result | {"stopped": decision.reason, "seconds": stages["done"]}
        # Where the taste lives, from the measured model (trained on every round, whichever
        # model U optimises): what RL may move and what it keeps as the prompt asks.
        fields = taste_fields(reward_models.get("measured"))
        result["taste_fields"] = fields.to_dict()
        if decision.preset != "R" or presets:
            say(f"  {fields.summary()}")

        # Presets (several runs and evaluations) take what they need.
        rl_seconds = None if presets else budget.rl_seconds(time.monotonic() - started)
        runs = _tune(
            presets or (decision.preset,),
            tag=tag, base=base, preference_model=decision.reward_model, collects=collects,
            reward_models=reward_models, fields=fields, budget=budget, seed=seed, stage=stage,
            say=say, rl_seconds=rl_seconds,
        )  # fmt: skip
        evaluations: dict[str, Evaluation] = {}
        reports: dict[str, dict[str, Any]] = {}
        for label, (candidate_run, baseline) in _comparisons(runs, base).items():
            stage(f"evaluation campaign: {label}, side by side")
            evaluations[label] = _evaluation(candidate_run, baseline, budget)
            reports[label] = _judged(
                evaluations[label], server=server, preference=preference, budget=budget,
                seed=seed, say=say,
            )  # fmt: skip
        stage("report")
        # The most the adherence measurements can credit on these prompts and clip length,
        # for pieces as long as the base writes them.
        sampling = getattr(get_backend(base.backend, base.backend_config()), "sampling", None)
        ceiling = composer_ceiling(
            list(next(iter(evaluations.values())).campaign.prompts.values_list("text", flat=True)),
            duration_seconds=budget.clip_seconds,
            piece_bars=sampling.max_bars if sampling else None,
        )
        for report in reports.values():
            report["adherence_ceiling"] = ceiling
        for label, evaluation in evaluations.items():
            reports[label] |= _whole_piece_adherence(
                evaluation, fields=fields, budget=budget, seed=seed, say=say
            )
    stage("done")
    result |= {
        "seconds": stages["done"],
        "reward_models": _reward_model_figures(reward_models),
    }
    if presets is None:
        (preset, run), (label, evaluation) = *runs.items(), *evaluations.items()
        return result | {
            "fine_tune_run": run.pk,
            "rl_stages": _stage_times(run),
            "preset": preset,
            "candidate": run.result_version.name,
            "evaluation": evaluation.pk,
            "report": reports[label],
        }
    table = presets_table(reports)
    for line in table_lines(table):
        say(line)
    say(f"{len(runs)} RL runs and {len(reports)} evaluations; wall time {stages['done']:.0f} s")
    return result | {
        "presets": list(presets),
        "fine_tune_runs": {preset: run.pk for preset, run in runs.items()},
        "rl_stages": {preset: _stage_times(run) for preset, run in runs.items()},
        "candidates": {preset: run.result_version.name for preset, run in runs.items()},
        "evaluations": {label: evaluation.pk for label, evaluation in evaluations.items()},
        "reports": reports,
        "table": table,
    }


def _collect_until_decided(
    *,
    server: LocalServer,
    preference: PreferenceFn,
    budget: Budget,
    objective: str,
    base: GeneratorVersion,
    tag: str,
    seed: int,
    result: dict[str, Any],
    stage: Callable[[str], None],
    say: Say,
) -> tuple[list[Campaign], dict[str, RewardModel], Decision]:
    """Collection rounds (clips, votes over the API, the snapshot, the reward models) until
    the objective is decided: optimise, or stop once the budget's rounds are spent."""
    collects: list[Campaign] = []
    reward_models: dict[str, RewardModel] = {}
    axes = VARIANT_AXES  # a later round may vary only the axes the votes left in doubt
    while True:
        round_number = len(collects) + 1
        stage(f"collect campaign {round_number}: generating clips")
        collect = campaign_create(
            name=f"{tag} collect {round_number}",
            purpose="collect",
            protocol="preference",
            prompt_texts=loop_prompts(
                budget.collect_prompts, seed, skip=len(collects) * budget.collect_prompts
            ),
            version_a=base,
            votes_per_item=budget.votes_per_item,
            min_listen_seconds=budget.min_listen_seconds,
            clip_seconds=budget.clip_seconds,
            queue=False,
            variant_axes=axes,
            variant_share=(
                budget.collect_variant_share if round_number == 1 else budget.followup_variant_share
            ),
        )
        collects.append(collect)
        generate(collect, say)
        stage(f"collect campaign {round_number}: simulated raters vote through the API")
        vote(
            collect, server=server, preference=preference, budget=budget,
            seed=seed + 7919 * (round_number - 1), say=say,
        )  # fmt: skip
        stage("snapshot of the data")
        rows = list(vote_rows(DataFilters(campaign_ids=tuple(c.pk for c in collects))))
        result["snapshot"] = {"votes": len(rows), "sha256": rows_sha256(rows)}
        say(f"  {result['snapshot']}")
        if len(rows) >= budget.audio_min_votes and "music_tower" not in reward_models:
            stage("reward models: the music tower")
            reward_models["music_tower"] = _music_tower(tag, budget, say)
        stage("reward models: preference models on the votes")
        reward_models |= _preference_models(
            tag, round_number, collects, budget, reward_models.get("music_tower"), say
        )
        decision = objective_decide(
            objective=objective,
            preference_models=[
                reward_models[role] for role in ("preference", "measured")
                if role in reward_models
            ],
            rounds_done=round_number,
            max_rounds=budget.max_collect_rounds,
            confident_lower=budget.confident_accuracy_lower,
            uncertain_error=budget.uncertain_axis_error,
        )  # fmt: skip
        say(f"  {decision.reason}")
        for role in ("preference", "measured"):
            if role in reward_models:
                say(f"  {against_the_raters(reward_models[role])}")
        if decision.action != "collect":
            break
        axes = decision.variant_axes or VARIANT_AXES
    return collects, reward_models, decision


def _tune(
    presets: tuple[str, ...],
    *,
    tag: str,
    base: GeneratorVersion,
    preference_model: RewardModel | None,
    collects: list[Campaign],
    reward_models: dict[str, RewardModel],
    fields: TasteFields,
    budget: Budget,
    seed: int,
    stage: Callable[[str], None],
    say: Say,
    rl_seconds: float | None = None,
) -> dict[str, FineTuneRun]:
    """One RL run per preset, in MusicRL's sense: R on prompt adherence, U on the preference
    model, RU as U started from R's result (so R runs first). U and RU explore and keep the
    prompt's fields as `fields` says; R's reward is adherence itself. rl_seconds: the time
    each run may take (None: its steps, however long they take)."""
    runs: dict[str, FineTuneRun] = {}
    for preset in sorted(presets, key=PRESETS.index):
        if preset in ("R", "RU") and "adherence" not in reward_models:
            stage("reward models: prompt adherence")
            reward_models["adherence"] = train_reward(
                f"{tag} adherence", "adherence", "attribute_match", collects, 1,
                {"held_out_size": 32, "clip_seconds": 2.0}, say,
            )  # fmt: skip
        if preset != "R" and preference_model is None:
            raise ValueError(f"{preset} needs a preference model that beats chance")
        starts_from = runs["R"].result_version if preset == "RU" else base
        reward = reward_models["adherence"] if preset == "R" else preference_model
        stage(f"RL fine-tuning ({preset}" + (", U from R's result)" if preset == "RU" else ")"))
        run = _rl_run(
            f"{tag} {preset}", starts_from, "R" if preset == "R" else "U", reward, budget, seed,
            fields=None if preset == "R" else fields, max_seconds=rl_seconds,
        )  # fmt: skip
        if any(m.get("stopped_reason") == TIME_BUDGET for m in _stage_metrics(run)):
            say(f"  the run stopped at step {int(run.curve[-1]['step'])} of {run.steps}: its "
                f"{rl_seconds:.0f} s ran out (the loop's wall time less what the evaluation "
                "needs)")  # fmt: skip
        for index, times in enumerate(_stage_times(run)):
            say(f"  stage {index + 1} ({times['part']}): {times['steps']} steps in "
                f"{times['seconds']} s")  # fmt: skip
        say(f"  candidate {run.result_version}; warnings: {run.warnings or 'none'}")
        runs[preset] = run
    return runs


def _rl_run(
    name: str,
    starts_from: GeneratorVersion,
    preset: str,
    reward: RewardModel,
    budget: Budget,
    seed: int,
    *,
    fields: TasteFields | None = None,
    max_seconds: float | None = None,
) -> FineTuneRun:
    """One RL run of the loop, with `rl_settings`."""
    run = finetune.finetune_run_create(
        name=name,
        base_version=starts_from,
        algorithm="rloo",
        preset=preset,
        steps=rl_steps(budget, fields),
        queue=False,
        stage_rewards=[{reward.pk: 1.0}],
        settings=rl_settings(budget, seed, fields=fields, max_seconds=max_seconds),
    )
    run = finetune.finetune_run_execute(run_id=run.pk)
    if run is None or run.status != FineTuneRun.Status.FINISHED:
        raise RuntimeError(f"the RL run {name} did not finish: {run and run.error}")
    return run


def _body_only(fields: TasteFields | None) -> bool:
    """A U or RU run whose reward no plan can move (R has no fields)."""
    return fields is not None and not fields.in_plan


def rl_steps(budget: Budget, fields: TasteFields | None = None) -> int:
    """A loop RL run's steps: the budget's, or more for a reward of what only the notes
    decide, whose steps are the cheapest (no plan stage) and the slowest to move."""
    return budget.rl_steps * (budget.rl_body_only_steps_factor if _body_only(fields) else 1)


def rl_settings(
    budget: Budget,
    seed: int,
    *,
    fields: TasteFields | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """A loop RL run's fine-tuning settings. With `fields` (U and RU) it explores the fields
    the votes pull (at the budget's exploring learning rate), keeps the others as the prompt
    asks, and tunes plans first when a plan can move its reward; when none can (a reward of
    what only the notes decide) its whole-sequence steps take the body-only KL weights and
    learning rate. Without `fields` (R) it tunes whole samples alone: its reward,
    adherence, the base meets already."""
    explored = fields.explored if fields else ()
    body_only = _body_only(fields)
    if body_only:
        learning_rate = budget.rl_body_only_learning_rate
    else:
        learning_rate = budget.rl_explore_learning_rate if explored else budget.rl_learning_rate
    return {
        "clip_seconds": budget.clip_seconds,
        "seed": seed,
        "learning_rate": learning_rate,
        "min_learning_rate": budget.rl_min_learning_rate,
        "beta": budget.rl_body_only_beta if body_only else budget.rl_beta,
        "kl_loss": budget.rl_body_only_kl_loss if body_only else budget.rl_kl_loss,
        "prompts_per_step": budget.rl_prompts_per_step,
        "samples_per_prompt": budget.rl_samples_per_prompt,
        "estimator": budget.rl_estimator,
        "plan_kl_weight": budget.rl_plan_kl_weight,
        "explore_share": budget.rl_explore_share if explored else 0.0,
        "explore_fields": list(explored),  # none when it does not explore
        "kept_fields": list(fields.kept if fields else ()),
        "keep_weight": budget.rl_keep_weight,
        "plan_steps": budget.rl_plan_steps if fields is not None and fields.in_plan else 0,
        "plan_prompts_per_step": budget.rl_plan_prompts_per_step,
        "plan_samples_per_prompt": budget.rl_plan_samples_per_prompt,
        "plan_learning_rate": budget.rl_plan_learning_rate,
        "plan_kl_loss": budget.rl_plan_kl_loss,
        "num_threads": budget.rl_num_threads,
        "train_prompts": budget.rl_train_prompts,
        "held_out_prompts": budget.rl_held_out_prompts,
        "eval_every": max(1, budget.rl_steps // 2),
        "checkpoint_every": max(1, budget.rl_steps // 4),
        "max_seconds": max_seconds or 0,
    }


def _stage_times(run: FineTuneRun) -> list[dict[str, Any]]:
    """Each RL stage's part, steps and wall seconds, for the report."""
    return [
        {key: figures.get(key) for key in ("part", "steps", "seconds", "stopped_reason")}
        for figures in _stage_metrics(run)
    ]


def _stage_metrics(run: FineTuneRun) -> list[dict[str, Any]]:
    return [run.metrics[f"stage_{index}"] for index in range(len(run.stages))
            if f"stage_{index}" in run.metrics]  # fmt: skip


def _comparisons(
    runs: dict[str, FineTuneRun], base: GeneratorVersion
) -> dict[str, tuple[FineTuneRun, GeneratorVersion]]:
    """What the raters compare: each tuned model against the base, and, as MusicRL did, RU
    against R. RU's comparison with R, its parent, comes first: a run's first evaluation is
    the one against its parent (`evaluation_for_run`), which its page shows."""
    pairs: dict[str, tuple[FineTuneRun, GeneratorVersion]] = {}
    for preset, run in runs.items():
        if run.base_version != base:
            pairs[f"{preset} vs R"] = (run, run.base_version)
        pairs[f"{preset} vs base"] = (run, base)
    return pairs


def _evaluation(run: FineTuneRun, baseline: GeneratorVersion, budget: Budget) -> Evaluation:
    """The evaluate campaign of the run's candidate against `baseline` on the run's held-out
    prompts (the same pool for every run of the loop: the pools depend only on the settings)."""
    from reward.evaluations import evaluation_create

    if baseline == run.base_version:
        return finetune_results.evaluation_for_run(
            run=run, votes_per_item=budget.eval_votes_per_item,
            min_listen_seconds=budget.min_listen_seconds, queue=False,
        )  # fmt: skip
    return evaluation_create(
        candidate=run.result_version, baseline=baseline,
        prompt_texts=run.data_summary["held_out_prompts"], fine_tune_run=run,
        votes_per_item=budget.eval_votes_per_item, clip_seconds=budget.clip_seconds,
        min_listen_seconds=budget.min_listen_seconds, queue=False,
    )  # fmt: skip


def _judged(
    evaluation: Evaluation,
    *,
    server: LocalServer,
    preference: PreferenceFn,
    budget: Budget,
    seed: int,
    say: Say,
) -> dict[str, Any]:
    """The evaluation's clips generated and voted by the population; its report."""
    from reward.evaluations import evaluation_refresh

    generate(evaluation.campaign, say)
    vote(
        evaluation.campaign, server=server, preference=preference, budget=budget,
        seed=seed + 1, say=say,
    )  # fmt: skip
    report = evaluation_refresh(evaluation)
    extra_rounds = 0
    # An evaluation that cannot tell 0.85 from 0.95 proves nothing: more votes on every
    # pair until enough are decisive (ties do not count), within the budget.
    while _decisive(report) < budget.min_decisive_votes and extra_rounds < 3:
        extra_rounds += 1
        say(f"  {_decisive(report)} decisive votes: one more vote per pair")
        campaign_votes_extend(campaign=evaluation.campaign, extra_per_item=1)
        vote(
            evaluation.campaign, server=server, preference=preference, budget=budget,
            seed=seed + 1 + extra_rounds, say=say,
        )  # fmt: skip
        report = evaluation_refresh(evaluation)
    return report


def _whole_piece_adherence(
    evaluation: Evaluation,
    *,
    fields: TasteFields,
    budget: Budget,
    seed: int,
    say: Say,
) -> dict[str, Any]:
    """The candidate's prompt adherence beside its baseline's on whole pieces of the
    evaluation's prompts (`evaluations.held_out_adherence`), and the fields the taste does
    not pull on which it fell more than 0.02 below."""
    from reward.evaluations import adherence_shortfalls, evaluation_held_out_adherence

    figures = evaluation_held_out_adherence(
        evaluation, samples_per_prompt=budget.adherence_samples_per_prompt, seed=seed + 7,
        threads=budget.rl_num_threads,
    )  # fmt: skip
    notes = (figures or {}).get("notes")
    if not notes:
        return {"held_out_adherence": figures}
    say(
        f"  adherence on whole pieces ({budget.adherence_samples_per_prompt} per prompt, "
        f"{notes['prompts']} prompts), {evaluation.candidate.name} against "
        f"{evaluation.baseline.name}: "
        + "; ".join(
            f"{part} {notes[part]['candidate']:.3f} / {notes[part]['parent']:.3f} "
            f"({notes[part]['difference']:+.3f})"
            for part in FIT_PARTS
        )
    )
    if (gap_closed := figures.get("gap_closed")) is not None:
        say(
            f"  mean fit {notes['score']['candidate']:.3f} against the baseline's "
            f"{notes['score']['parent']:.3f} and the composer's "
            f"{figures['composer_ceiling']['score']:.3f} (the ceiling): the candidate made up "
            f"{gap_closed:+.2f} of the baseline's shortfall"
        )
    shortfalls = adherence_shortfalls(figures, fields.kept)
    say(
        "  fields the taste does not pull, more than 0.02 below the baseline: "
        + (", ".join(f"{name} {value:+.3f}" for name, value in shortfalls.items()) or "none")
    )
    return {"held_out_adherence": figures, "unpulled_shortfalls": shortfalls}


def _music_tower(tag: str, budget: Budget, say: Say) -> RewardModel:
    """Trained on the composer's captioned corpus, it starts the audio preference network's
    encoder, which a few hundred votes could not train."""
    return train_reward(
        f"{tag} adherence (two towers)",
        "adherence",
        "learned",
        [],
        budget.adherence_steps,
        {
            "corpus_size": budget.adherence_corpus,
            "held_out_size": min(64, budget.adherence_corpus // 2),
            "clip_seconds": budget.clip_seconds,
            "eval_every": max(1, budget.adherence_steps // 4),
        },
        say,
    )


def _preference_models(
    tag: str,
    round_number: int,
    collects: list[Campaign],
    budget: Budget,
    music_tower: RewardModel | None,
    say: Say,
) -> dict[str, RewardModel]:
    """The preference models on every collection round's votes so far: the measured-feature
    model, and the audio network (its encoder started from the music tower) once there is a
    music tower, that is once the votes are enough for it (`Budget.audio_min_votes`)."""
    test_share = 0.2
    suffix = f" (round {round_number})" if round_number > 1 else ""
    models: dict[str, RewardModel] = {}
    if music_tower is not None:
        models["preference"] = train_reward(
            f"{tag} preference{suffix}",
            "preference",
            "learned",
            collects,
            budget.reward_steps,
            {
                "test_share": test_share,
                "learning_rate": 1e-3,
                "eval_every": max(1, budget.reward_steps // 4),
                "encoder_from": music_tower.pk,
            },
            say,
        )
    models["measured"] = train_reward(
        f"{tag} preference (measured features){suffix}",
        "preference",
        "measured",
        collects,
        1,
        # Only the weights the votes support: RL would chase the rest's noise as readily.
        {"test_share": test_share, "support_error": SUPPORT_ERROR},
        say,
    )
    return models


def _decisive(report: dict[str, Any]) -> int:
    comparison = report.get("comparison") or {}
    return int(comparison.get("wins") or 0) + int(comparison.get("losses") or 0)


def _reward_model_figures(models: dict[str, RewardModel]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for role, model in models.items():
        figures[role] = {"id": model.pk, **model.metrics.get("heldout", {})}
        if model.kind == RewardModel.Kind.PREFERENCE:
            figures[role]["against_raters"] = raters_agreement_gap(model)
        if model.method == RewardModel.Method.MEASURED:
            figures[role]["weights"] = model.metrics.get("weights", {})
            if "cross_validated" in model.metrics:
                figures[role]["cross_validated"] = model.metrics["cross_validated"]
    return figures
