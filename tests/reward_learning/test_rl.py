"""RLOO on a tiny, randomly initialised generator with a known cheap reward: the share of a
sample's notes pitched at MIDI 64 or above (about half, to start with). The policy and the
reference start as copies of one planned model; sequences are kept short (a 128-token
context, one bar) so that a step costs about a third of a second on one thread."""

import copy
import dataclasses
import math
from dataclasses import replace

import pytest
import torch

from generation.music.learned import SamplingConfig, SymbolicTransformerBackend
from generation.music.planned import SIZES, PlannedMusicGPT
from generation.music.prompts import parse_prompt
from generation.music.text_encoder import get_text_encoder
from generation.music.tokenizer import BAR_ID, TOKENS, header_length
from reward.learning.loop import CHECKPOINT_NAME, Cancelled, EarlyStop, LoopConfig, run_loop
from reward.learning.rl import (
    RewardStatistics,
    RLOOConfig,
    Scored,
    best_in_groups,
    logprobs_against_reference,
    objective_of,
    rloo_advantages,
    sampler_for,
    train_rloo,
)
from tests.reward_learning.synthetic import one_thread  # noqa: F401  (autouse fixture)

PROMPTS = [
    "slow sad piano ballad",
    "fast techno with drums",
    "jazz trio in F major",
    "ambient pad",
    "rock with electric guitar",
    "chill lofi beat",
]
HELD_OUT = ["happy folk song", "dark cinematic strings", "upbeat pop", "calm harp"]
IS_PITCH = torch.tensor([token.startswith("Pitch_") for token in TOKENS])
IS_HIGH = torch.tensor([token.startswith("Pitch_") and int(token[6:]) >= 64 for token in TOKENS])


def high_pitch_share(samples) -> dict[str, torch.Tensor]:
    shares = []
    for sample in samples:
        ids = torch.tensor(sample.token_ids)
        pitches = int(IS_PITCH[ids].sum())
        shares.append(int(IS_HIGH[ids].sum()) / pitches if pitches else 0.0)
    return {"high": torch.tensor(shares)}


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder()


def models(encoder, seed: int = 0):
    """(policy, reference): one tiny random model and a frozen copy of it."""
    torch.manual_seed(seed)
    tiny = SIZES["tiny"]
    model = PlannedMusicGPT(replace(tiny, body=replace(tiny.body, block_size=128))).eval()
    sampling = SamplingConfig(max_bars=1)
    policy = SymbolicTransformerBackend(model, sampling=sampling, text_encoder=encoder)
    reference = SymbolicTransformerBackend(
        copy.deepcopy(model), sampling=sampling, text_encoder=encoder
    )
    return policy, reference


def config(**overrides) -> RLOOConfig:
    loop = dict(
        steps=40,
        learning_rate=3e-3,  # a random tiny model, not a fine-tuning: see the report
        min_learning_rate=3e-4,
        warmup_steps=10,
        weight_decay=0.0,
        checkpoint_every=20,
        eval_every=10,
        num_threads=1,
    )
    settings = dict(
        prompts_per_step=4,
        samples_per_prompt=4,
        beta=0.05,
        reward_weights={"high": 1.0},
        held_out_samples=2,
        checkpoint_samples=2,
    )
    loop |= overrides.pop("loop", {})
    return RLOOConfig(loop=LoopConfig(**loop), **(settings | overrides))


def window(history, key, rows) -> float:
    values = [entry[key] for entry in history[rows]]
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def trained(encoder, tmp_path_factory):
    policy, reference = models(encoder)
    checkpoints: list[tuple[int, list]] = []
    result = train_rloo(
        config(),
        policy,
        reference,
        PROMPTS,
        HELD_OUT,
        high_pitch_share,
        tmp_path_factory.mktemp("rloo"),
        on_checkpoint=lambda step, samples: checkpoints.append((step, samples)),
    )
    return result, checkpoints


# --- the estimator ------------------------------------------------------------------------


def test_leave_one_out_advantages_sum_to_zero_in_each_prompt_group():
    objective = torch.tensor([1.0, 2.0, 6.0, -1.0, 0.5, 0.5, 3.0, 10.0], dtype=torch.float64)

    advantages = rloo_advantages(objective, group_size=4)

    torch.testing.assert_close(advantages.view(2, 4).sum(1), torch.zeros(2, dtype=torch.float64))
    # A_0 = R_0 - mean(R_1, R_2, R_3) = 1 - (2 + 6 - 1) / 3
    assert float(advantages[0]) == pytest.approx(1 - 7 / 3)
    assert float(advantages[4]) == pytest.approx(0.5 - 13.5 / 3)
    # a shift shared by a group (an easy prompt) changes nothing
    torch.testing.assert_close(rloo_advantages(objective + 5.0, 4), advantages)


def test_the_best_of_each_group_is_its_highest_objective_and_the_first_on_a_tie():
    objective = torch.tensor([1.0, 2.0, 6.0, -1.0, 0.5, 0.5, 0.5, 0.5, 3.0, 10.0, 10.0, 2.0])

    assert best_in_groups(objective, group_size=4).tolist() == [2, 4, 9]


def plan_tempo(samples) -> dict[str, torch.Tensor]:
    """A taste that lives in the plan: the faster the declared tempo, the better."""
    return {"high": torch.tensor([sample.piece.tempo_bpm / 200 for sample in samples])}


def test_best_of_group_raises_a_plan_reward_by_learning_from_each_prompt_s_best_sample(
    encoder, tmp_path
):
    policy, reference = models(encoder)
    settings = config(estimator="best_of_group", kl_loss=0.1, loop={"steps": 30, "eval_every": 30})

    result = train_rloo(settings, policy, reference, PROMPTS, HELD_OUT, plan_tempo, tmp_path)

    history, metrics = result.history, result.metrics
    # Seen when written: the held-out reward rose from 0.847 to 0.956 (4 held-out prompts x 2
    # samples; a tempo step of the grid is 0.02 to 0.05).
    assert metrics["heldout_reward_high"] > metrics["initial"]["heldout_reward_high"] + 0.05
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-3)
    assert all(math.isfinite(entry["kl"]) for entry in history)
    assert 0 < metrics["kl"] < 50
    assert all(math.isfinite(entry["grad_norm"]) and entry["grad_norm"] > 0 for entry in history)


def test_rl_on_the_plan_alone_moves_the_plan_and_leaves_the_body_exactly_as_it_was(
    encoder, tmp_path
):
    """part="plan": each sample is a plan the composer plays (`sample_plans`), so a taste
    that lives in the plan moves the planner, and the body, which no plan sample reaches,
    keeps every weight."""
    policy, reference = models(encoder)
    body_before = copy.deepcopy(policy.model.body.state_dict())
    planner_before = copy.deepcopy(policy.model.planner.state_dict())
    settings = config(part="plan", kl_loss=0.1, loop={"steps": 30, "eval_every": 30})

    result = train_rloo(settings, policy, reference, PROMPTS, HELD_OUT, plan_tempo, tmp_path)

    metrics = result.metrics
    # Seen when written: the held-out reward rose from 0.847 to 0.956 (as the same reward
    # did in 30 steps on whole sequences, above).
    assert metrics["heldout_reward_high"] > metrics["initial"]["heldout_reward_high"] + 0.05
    assert metrics["heldout_length"] < 20  # plans, not pieces
    body_after, planner_after = policy.model.body.state_dict(), policy.model.planner.state_dict()
    assert all(torch.equal(body_after[name], body_before[name]) for name in body_before)
    assert any(not torch.equal(planner_after[n], planner_before[n]) for n in planner_before)


def test_sampled_plans_score_as_they_were_sampled_and_are_played_as_declared(encoder):
    from generation.music.plan import plan_agreement

    policy, _ = models(encoder)
    samples = policy.sample_plans(PROMPTS, 3, seed=5)

    assert [sample.prompt for sample in samples] == [p for p in PROMPTS for _ in range(3)]
    assert all(TOKENS[sample.token_ids[-1]] == "Bar" for sample in samples)
    assert all(header_length(sample.token_ids) == len(sample.token_ids) - 1 for sample in samples)
    scored = policy.seq_logprobs([s.prompt for s in samples], [s.token_ids for s in samples])
    recorded = torch.stack([sample.logprobs.sum() for sample in samples])
    torch.testing.assert_close(scored.float(), recorded.float(), atol=1e-4, rtol=0)
    played = [s for s in samples if s.plan.instruments]
    assert played
    for sample in played:
        agreement = plan_agreement(sample.plan, sample.piece)
        assert agreement["tempo"] == agreement["instruments"] == agreement["drums"] == 1.0


def test_scoring_against_the_reference_matches_scoring_each_model_alone(encoder):
    policy, reference = models(encoder)
    with torch.no_grad():
        for parameter in policy.model.parameters():  # a policy that has moved away
            parameter.add_(0.05 * torch.randn_like(parameter))
        samples = policy.sample(PROMPTS * 3, 2, seed=1)  # 36: more than one scoring chunk
    prompts, ids = [s.prompt for s in samples], [s.token_ids for s in samples]

    logprobs, kl, squared = logprobs_against_reference(policy, reference, samples)

    with torch.no_grad():
        alone = policy.seq_logprobs(prompts, ids)
        reference_alone = reference.seq_logprobs(prompts, ids)
    assert torch.allclose(logprobs.detach(), alone, atol=1e-6)
    assert torch.allclose(kl, alone - reference_alone, atol=1e-6)
    assert not kl.requires_grad and logprobs.requires_grad and squared.requires_grad
    # the squared log-ratio of one sequence, token by token
    first = samples[0]
    with torch.no_grad():
        tokens, _ = policy.token_logprobs([first.prompt], [first.token_ids])
        reference_tokens, _ = reference.token_logprobs([first.prompt], [first.token_ids])
    by_hand = 0.5 * ((tokens.double() - reference_tokens.double()) ** 2)[0]
    assert float(squared.detach()[0]) == pytest.approx(float(by_hand.sum()), rel=1e-6)
    assert bool((squared > 0).all())
    # plan_weight: each header token (the plan and the Bar closing it) counts 1 + 3 times
    _, _, weighted = logprobs_against_reference(policy, reference, samples[:1], plan_weight=3.0)
    plan = header_length(first.token_ids) + 1
    assert 1 < plan < len(first.token_ids)
    expected = by_hand.sum() + 3.0 * by_hand[:plan].sum()
    assert float(weighted.detach()[0]) == pytest.approx(float(expected), rel=1e-6)


def test_the_per_token_kl_term_vanishes_with_its_gradient_at_the_reference(encoder):
    policy, reference = models(encoder)
    samples = policy.sample(PROMPTS, 2, seed=2)

    _, kl, squared = logprobs_against_reference(policy, reference, samples)
    squared.sum().backward()

    assert torch.allclose(kl, torch.zeros_like(kl)) and float(squared.detach().sum()) == 0.0
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and all(not grad.any() for grad in grads)  # reached the weights, and is 0


def test_running_reward_statistics_match_the_statistics_of_everything_seen():
    torch.manual_seed(0)
    batches = [torch.randn(16, 2, dtype=torch.float64) * 3 + 1 for _ in range(3)]
    statistics = RewardStatistics(["a", "b"])

    for batch in batches:
        statistics.update(batch)

    seen = torch.cat(batches)
    torch.testing.assert_close(statistics.mean, seen.mean(0))
    torch.testing.assert_close(statistics.std(), seen.std(0, correction=0))
    normalised = statistics.normalise(seen)
    torch.testing.assert_close(normalised.mean(0), torch.zeros(2, dtype=torch.float64))


# --- training -----------------------------------------------------------------------------


def test_rloo_raises_the_reward_and_keeps_the_kl_finite(trained):
    result, _ = trained
    history, metrics = result.history, result.metrics
    assert [entry["step"] for entry in history] == list(range(1, 41))
    assert window(history, "reward_high", slice(-10, None)) > (
        window(history, "reward_high", slice(0, 10)) + 0.1
    )
    assert metrics["heldout_reward_high"] > metrics["initial"]["heldout_reward_high"] + 0.1
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-3)  # the first batch: policy = reference
    assert all(math.isfinite(entry["kl"]) for entry in history)
    assert 0.5 < metrics["kl"] < 50 and 0.5 < metrics["heldout_kl"] < 50
    assert metrics["initial"]["heldout_kl"] == pytest.approx(0.0, abs=1e-3)
    for key in ("reward_total", "objective", "diversity", "length", "well_formed", "grad_norm"):
        assert all(math.isfinite(entry[key]) for entry in history), key
    held_out = [entry["step"] for entry in history if "heldout_reward_total" in entry]
    assert held_out == [10, 20, 30, 40]
    for part in ("tempo", "instruments", "drums", "mode", "density", "key", "score"):
        assert all(0 <= entry[f"fit_{part}"] <= 1 for entry in history), part
        assert 0 <= metrics[f"heldout_fit_{part}"] <= 1 and f"heldout_fit_{part}" in history[9]
    assert result.stopped_reason is None and result.warnings == []
    assert result.resumed_from == 0 and metrics["steps"] == 40


def test_the_run_samples_on_its_own_threads_and_leaves_the_policy_s_settings(encoder):
    policy, _ = models(encoder)
    two = config(loop={"num_threads": 2})

    sampler = sampler_for(policy, two)

    assert sampler.sampling.num_threads == 2 and sampler.model is policy.model
    assert policy.sampling.num_threads == 1  # what a saved candidate will sample with
    assert sampler_for(policy, config()) is policy  # nothing to change


def test_on_checkpoint_gets_the_same_held_out_prompts_at_each_checkpoint(trained):
    _, checkpoints = trained
    assert [step for step, _ in checkpoints] == [0, 20, 40]
    for _, samples in checkpoints:
        assert [sample.prompt for sample in samples] == HELD_OUT[:2]
        assert all(sample.piece is not None for sample in samples)
    # the policy moved, so the fixed-seed samples changed
    assert checkpoints[0][1][0].token_ids != checkpoints[-1][1][0].token_ids


def test_with_a_very_high_beta_the_policy_stays_near_the_reference(encoder, trained, tmp_path):
    """The KL penalty is part of the reward, so it acts through the same noisy REINFORCE
    gradient as the reward: with Adam the policy still wanders a little (a floor that grows
    with the learning rate), but nowhere near as far as with the small beta, and it no longer
    follows the reward."""
    low_beta, _ = trained
    policy, reference = models(encoder)

    result = train_rloo(
        config(beta=50.0), policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path
    )

    history = result.history
    kl_high, kl_low = (window(r.history, "kl", slice(-10, None)) for r in (result, low_beta))
    assert kl_high < kl_low / 3
    assert window(history, "reward_high", slice(-10, None)) < (
        window(history, "reward_high", slice(0, 10)) + 0.03
    )
    assert result.metrics["heldout_reward_high"] < low_beta.metrics["heldout_reward_high"] - 0.1


def test_the_per_token_kl_term_holds_the_policy_nearer_the_reference(encoder, trained, tmp_path):
    """Unlike beta, kl_loss acts on each token directly rather than through the reward's noisy
    advantage, so a strong weight keeps the policy close while it still learns."""
    free, _ = trained
    policy, reference = models(encoder)

    result = train_rloo(
        config(kl_loss=5.0), policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path
    )

    kl_held, kl_free = (window(r.history, "kl", slice(-10, None)) for r in (result, free))
    assert kl_held < kl_free / 2
    assert all(math.isfinite(entry["kl"]) for entry in result.history)


def test_a_cancelled_run_resumes_exactly(encoder, tmp_path):
    settings = config(loop={"steps": 6, "checkpoint_every": 100, "eval_every": 3})

    def cancel_at_3(step, total, entry):
        if step == 3:
            raise Cancelled

    policy, reference = models(encoder)
    with pytest.raises(Cancelled):
        train_rloo(
            settings, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path / "a",
            on_progress=cancel_at_3,
        )  # fmt: skip
    policy, reference = models(encoder)  # a new worker: the base model again
    resumed = train_rloo(
        settings, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path / "a"
    )
    policy, reference = models(encoder)
    straight = train_rloo(
        settings, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path / "b"
    )

    assert resumed.resumed_from == 3 and straight.resumed_from == 0
    assert resumed.history == straight.history
    for name, tensor in straight.policy.model.state_dict().items():
        assert torch.equal(resumed.policy.model.state_dict()[name], tensor), name
    saved = [torch.load(tmp_path / run / CHECKPOINT_NAME, weights_only=True) for run in "ab"]
    assert torch.equal(saved[0]["model"]["statistics.m2"], saved[1]["model"]["statistics.m2"])
    assert saved[0]["model"]["statistics.count"] == 6 * 16


def test_a_resume_with_another_reference_is_refused(encoder, tmp_path):
    settings = config(loop={"steps": 1})
    policy, reference = models(encoder)
    train_rloo(settings, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path)
    other_policy, _ = models(encoder)
    _, other_reference = models(encoder, seed=1)

    with pytest.raises(ValueError, match="other settings"):
        train_rloo(
            settings, other_policy, other_reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path
        )


def test_an_early_stop_from_a_step_function_keeps_the_steps_before_it(tmp_path):
    """The loop's side of the guards: EarlyStop from step_fn drops that step, checkpoints
    the one before with the reason, announces the checkpoint, and a rerun does nothing."""
    model = torch.nn.Linear(2, 1)
    announced = []

    def step_fn(step, rng):
        if step == 3:
            raise EarlyStop("enough")
        return model(torch.ones(1, 2)).sum(), {}

    def run():
        settings = LoopConfig(steps=10, checkpoint_every=100, num_threads=1)
        return run_loop(
            model, step_fn, config=settings, checkpoint_dir=tmp_path, on_checkpoint=announced.append
        )

    first, again = run(), run()

    assert first.stopped_reason == "enough" and first.step == 3 and len(first.history) == 3
    assert announced == [3]
    assert again.stopped_reason == "enough" and again.history == first.history
    assert again.resumed_from == 3


# --- guards against reward hacking --------------------------------------------------------


def test_the_kl_guard_stops_the_run_after_a_checkpoint_and_it_stays_stopped(encoder, tmp_path):
    settings = config(kl_limit=1.0, guard_action="stop", loop={"steps": 20, "warmup_steps": 1})
    policy, reference = models(encoder)

    result = train_rloo(settings, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path)

    stopped_at = len(result.history)
    assert result.stopped_reason == "kl_limit" and result.metrics["stopped_reason"] == "kl_limit"
    assert 1 < stopped_at < 20
    assert result.history[-1]["kl"] > 1.0 >= max(e["kl"] for e in result.history[:-1])
    assert result.warnings == [
        {"step": stopped_at, "kind": "kl_limit", "value": result.history[-1]["kl"], "limit": 1.0}
    ]
    assert "heldout_kl" in result.metrics  # evaluated after the stop
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == stopped_at and saved["stopped_reason"] == "kl_limit"

    policy, reference = models(encoder)
    again = train_rloo(settings, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path)
    assert again.stopped_reason == "kl_limit" and again.resumed_from == stopped_at
    assert again.history == result.history and again.warnings == result.warnings


def test_the_warn_action_records_warnings_and_trains_on(encoder, tmp_path):
    settings = config(kl_limit=0.5, guard_action="warn", loop={"steps": 8, "warmup_steps": 1})
    policy, reference = models(encoder)

    result = train_rloo(settings, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path)

    assert result.stopped_reason is None and len(result.history) == 8
    above = [entry["step"] for entry in result.history if entry["kl"] > 0.5]
    assert result.warnings and result.warnings[0]["step"] == above[0]
    assert len(result.warnings) < len(above)  # not one per step
    assert {warning["kind"] for warning in result.warnings} == {"kl_limit"}


def test_configs_round_trip_and_bad_settings_are_refused():
    settings = config(kl_limit=3.0)
    assert RLOOConfig.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match="samples_per_prompt"):
        RLOOConfig(samples_per_prompt=1)
    with pytest.raises(ValueError, match="guard_action"):
        RLOOConfig(guard_action="panic")
    with pytest.raises(ValueError, match="kl_loss"):
        RLOOConfig(kl_loss=-1.0)
    with pytest.raises(ValueError, match="estimator"):
        RLOOConfig(estimator="ppo")
    with pytest.raises(ValueError, match="plan_kl_weight"):
        RLOOConfig(plan_kl_weight=-1.0)


def test_a_sample_that_strays_from_a_kept_field_loses_keep_weight_for_each_unit_of_fit():
    from types import SimpleNamespace

    settings = config(kept_fields=["key"], keep_weight=3.0, normalise_rewards=False, beta=0.5)
    statistics = RewardStatistics(settings.reward_names)
    run = SimpleNamespace(config=settings, module=SimpleNamespace(statistics=statistics))
    scored = Scored(
        samples=[],
        raw=torch.tensor([[0.8], [0.8], [0.2]], dtype=torch.float64),
        kl=torch.tensor([0.2, 0.2, 0.0], dtype=torch.float64),
        strayed=torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64),
    )

    objective = objective_of(run, scored).tolist()

    # R = reward - beta KL - keep_weight strayed
    assert objective == pytest.approx([0.8 - 0.1, 0.8 - 0.1 - 3.0, 0.2 - 1.5])


def test_a_run_that_keeps_fields_locks_the_policy_s_plans_to_them(encoder, tmp_path):
    """The tiny random planner strays on every field; kept, its training and held-out
    plans declare them as asked, and the tuned policy (the version saved from it) keeps
    sampling so."""
    from generation.music.evaluation import plan_fit
    from generation.music.plan import plan_agreement
    from reward.learning.reward_hacking import NOTES_KEPT_FIELDS, strayed

    kept = ("tempo", "instruments", "drums", "mode", "density", "key")
    settings = config(kept_fields=kept, loop={"steps": 2, "warmup_steps": 1})
    policy, reference = models(encoder)
    fits = lambda samples: [plan_fit(parse_prompt(s.prompt), s.plan) for s in samples]  # noqa: E731
    assert any(fit[name] < 1 for fit in fits(policy.sample(PROMPTS, 2, 0)) for name in kept)

    result = train_rloo(settings, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path)

    assert policy.sampling.kept_fields == kept
    after = policy.sample(PROMPTS, 4, 1)
    assert all(fit[name] == 1 for fit in fits(after) for name in kept)
    # So a sample strays only where its notes leave the plan (the tiny body plays its plans
    # loosely), on the fields the notes measure well.
    left_plan = [
        sum(1 - value for value in plan_agreement(s.plan, s.piece, NOTES_KEPT_FIELDS).values())
        for s in after
    ]
    assert strayed(after, kept).tolist() == pytest.approx(left_plan)
    assert len(result.history) == 2


def test_kept_and_explored_fields_are_checked_and_survive_a_round_trip_through_json():
    import json

    settings = config(explore_share=0.25, explore_fields=["tempo"], kept_fields=["key", "mode"])
    assert (settings.explore_fields, settings.kept_fields) == (("tempo",), ("key", "mode"))
    stored = json.loads(json.dumps(settings.to_dict()))
    assert RLOOConfig.from_dict(stored) == settings
    with pytest.raises(ValueError, match="kept_fields"):
        config(kept_fields=["register"])
    with pytest.raises(ValueError, match="explore_fields"):
        config(explore_fields=["key"])  # a variant never changes the key
    with pytest.raises(ValueError, match="at least one axis"):
        config(explore_share=0.25, explore_fields=[])
    with pytest.raises(ValueError, match="keep_weight"):
        config(keep_weight=-1.0)


def test_each_part_of_a_planned_policy_steps_at_its_own_scale_of_the_rate(encoder, tmp_path):
    # A zero scale freezes the planner exactly while the body learns; the scale reaches the
    # optimiser's groups (and so the checkpoint) as the loop sets their rates.
    policy, reference = models(encoder)
    planner_before = copy.deepcopy(policy.model.planner.state_dict())
    body_before = copy.deepcopy(policy.model.body.state_dict())
    frozen = config(loop=dict(steps=3, eval_every=3, part_lr_scales={"planner": 0.0}))
    train_rloo(frozen, policy, reference, PROMPTS, HELD_OUT, high_pitch_share, tmp_path)
    planner_after, body_after = policy.model.planner.state_dict(), policy.model.body.state_dict()
    assert all(torch.equal(planner_before[k], planner_after[k]) for k in planner_before)
    assert any(not torch.equal(body_before[k], body_after[k]) for k in body_before)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    scales = sorted(group["lr_scale"] for group in saved["optimizer"]["param_groups"])
    assert scales == [0.0, 0.0, 1.0, 1.0]  # planner and body, matrices and vectors each


def test_explored_samples_are_drawn_for_a_varied_prompt_and_answer_the_prompt_itself(encoder):
    import random

    from generation.music.prompt_sampling import prompt_variant
    from reward.learning.rl import RLOOModule, RLOORun

    policy, reference = models(encoder)
    settings = config(explore_share=0.25)  # 1 of each prompt's 4 samples
    run = RLOORun(settings, RLOOModule(policy.model, ["high"]), policy, reference, high_pitch_share)
    prompts = PROMPTS[:2]

    samples = run.explored_sample(prompts, 4, seed=11)

    assert [s.prompt for s in samples] == [p for p in prompts for _ in range(4)]
    # The same rows drawn one by one: three for the prompt, the fourth for its variant.
    rng = random.Random(11)
    rows = [row for p in prompts for row in [p] * 3 + [prompt_variant(p, rng)]]
    seeds = [rng.randrange(2**31) for _ in rows]
    assert rows[3] != prompts[0] and rows[3].endswith(".")  # a caption, not the prompt
    for index, (row, seed) in enumerate(zip(rows, seeds, strict=True)):
        (alone,) = policy.sample_seeded([row], [seed])
        assert samples[index].token_ids == alone.token_ids
    # A step on them runs, and its log-probs are the prompt's own (scored as answers to it).
    _, logprobs, _ = run.score(samples)
    asked = policy.seq_logprobs([s.prompt for s in samples], [s.token_ids for s in samples])
    assert torch.allclose(logprobs.float(), asked.float(), atol=1e-4)
    # Limited to one axis, every variant asks for another tempo and nothing else.
    tempo_only = RLOORun(
        config(explore_share=0.5, explore_fields=["tempo"]),
        RLOOModule(policy.model, ["high"]), policy, reference, high_pitch_share,
    )  # fmt: skip
    samples = tempo_only.explored_sample(prompts, 4, seed=5)
    rng = random.Random(5)
    rows = []
    for prompt in prompts:
        rows += [prompt, prompt] + [prompt_variant(prompt, rng, ["tempo"]) for _ in range(2)]
    seeds = [rng.randrange(2**31) for _ in rows]
    for index in (2, 3, 6, 7):
        wanted, varied = parse_prompt(samples[index].prompt), parse_prompt(rows[index])
        assert varied.tempo_bpm != wanted.tempo_bpm
        assert dataclasses.replace(varied, tempo_bpm=wanted.tempo_bpm) == wanted
        (alone,) = policy.sample_seeded([rows[index]], [seeds[index]])
        assert samples[index].token_ids == alone.token_ids


def test_exploration_must_leave_each_prompt_its_own_samples_and_is_for_rloo():
    assert config(explore_share=0.25).explored_per_prompt == 1
    with pytest.raises(ValueError, match="explore_share must leave"):
        config(explore_share=1.0)
    with pytest.raises(ValueError, match="explore_share must leave"):
        config(explore_share=0.05)  # rounds to none of 4
    with pytest.raises(ValueError, match="for the rloo estimator"):
        config(explore_share=0.25, estimator="best_of_group")
    assert config(explore_share=0.25, part="plan").explored_per_prompt == 1


def test_a_plan_run_explores_with_plans_drawn_for_varied_prompts(encoder):
    import random

    from generation.music.prompt_sampling import prompt_variant
    from reward.learning.rl import RLOOModule, RLOORun

    policy, reference = models(encoder)
    settings = config(explore_share=0.5, explore_fields=["tempo"], part="plan")
    run = RLOORun(settings, RLOOModule(policy.model, ["high"]), policy, reference, high_pitch_share)
    prompts = PROMPTS[:2]

    samples = run.explored_sample(prompts, 4, seed=3)

    # Answers to the prompts themselves, each a plan with the Bar that closes it.
    assert [s.prompt for s in samples] == [p for p in prompts for _ in range(4)]
    assert all(s.plan is not None and s.token_ids[-1] == BAR_ID for s in samples)
    # The same plans as sample_plans draws for the rows: two for the prompt, two for a
    # variant that asks another tempo and nothing else.
    rng = random.Random(3)
    rows = []
    for prompt in prompts:
        rows += [prompt, prompt] + [prompt_variant(prompt, rng, ["tempo"]) for _ in range(2)]
    drawn = policy.sample_plans(rows, 1, rng.randrange(2**31))
    assert [s.token_ids for s in samples] == [s.token_ids for s in drawn]
    for index in (2, 3, 6, 7):
        wanted, varied = parse_prompt(samples[index].prompt), parse_prompt(rows[index])
        assert varied.tempo_bpm != wanted.tempo_bpm
        assert dataclasses.replace(varied, tempo_bpm=wanted.tempo_bpm) == wanted
    # Scored as answers to the prompt: the planner's log-probs of those plans given it.
    _, logprobs, _ = run.score(samples)
    asked = policy.seq_logprobs([s.prompt for s in samples], [s.token_ids for s in samples])
    assert torch.allclose(logprobs.float(), asked.float(), atol=1e-4)
