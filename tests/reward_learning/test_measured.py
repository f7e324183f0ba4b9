"""The measured-feature preference model: features read from the notes, a Bradley-Terry fit
that recovers a known taste from votes, and a scorer file that round-trips exactly."""

import dataclasses
import json
import random

import numpy as np
import pytest
from scipy.special import expit

from generation.music.composer import compose
from generation.music.events import piece_to_events
from generation.music.prompts import parse_prompt
from reward.learning.measured import (
    FEATURE_NAMES,
    MeasuredPreferenceModel,
    clip_features,
    features_matrix,
    fit_measured_preference,
    fit_supported,
    out_of_fold_margins,
    supported_features,
    weight_intervals,
)
from tests.reward.conftest import varied_prompts

TEMPO = FEATURE_NAMES.index("tempo_bpm")
TEMPO_FIT = FEATURE_NAMES.index("tempo_fit")


def events_for(prompt: str, seed: int = 0) -> list[str]:
    return piece_to_events(compose(parse_prompt(prompt), seed=seed, duration_seconds=4.0))


def test_features_measure_the_notes_and_their_fit_to_the_prompt():
    slow = clip_features("slow calm piano ballad", events_for("slow calm piano ballad"))
    fast = clip_features("slow calm piano ballad", events_for("fast energetic techno"))
    assert len(slow) == len(FEATURE_NAMES)
    assert fast[TEMPO] > slow[TEMPO] + 30
    # The composer follows the prompt, so its own piece fits better than the techno does.
    assert slow[TEMPO_FIT] > fast[TEMPO_FIT]


def test_a_clip_without_notes_measures_as_zeros():
    assert clip_features("any prompt", []) == [0.0] * len(FEATURE_NAMES)


def synthetic_votes(weights: np.ndarray, pairs: int, seed: int):
    """Votes of raters whose true reward is `weights` . features, logistic choice."""
    rng = np.random.default_rng(seed)
    features_a = rng.normal(size=(pairs, len(FEATURE_NAMES))) * 10 + 50
    features_b = rng.normal(size=(pairs, len(FEATURE_NAMES))) * 10 + 50
    p_a = expit((features_a - features_b) @ weights)
    targets = (rng.random(pairs) < p_a).astype(float)
    return features_a, features_b, targets


def test_the_fit_recovers_which_feature_the_raters_reward():
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2  # faster is better: a standard deviation (10) is 2 logits
    model, report = fit_measured_preference(*synthetic_votes(truth, 400, seed=0))

    assert report["converged"]
    weights = model.weights_by_feature()
    assert weights["tempo_bpm"] > 1.2
    others = [abs(w) for name, w in weights.items() if name != "tempo_bpm"]
    assert max(others) < 0.35 * weights["tempo_bpm"]
    features_a, features_b, targets = synthetic_votes(truth, 400, seed=1)
    predicted_a = model.reward(features_a) > model.reward(features_b)
    assert np.mean(predicted_a == (targets == 1)) > 0.75  # held-out votes


def test_bootstrap_intervals_pin_down_the_rewarded_feature_and_span_zero_for_the_rest():
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2
    features_a, features_b, targets = synthetic_votes(truth, 300, seed=6)
    prompts = np.arange(300) // 3  # three votes per prompt

    intervals = weight_intervals(features_a, features_b, targets, prompts, resamples=100)

    assert intervals["tempo_bpm"][0] > 1.0  # the true weight is 2 logits per deviation
    spanning = [name for name, (low, high) in intervals.items() if low < 0 < high]
    # 24 features carry nothing; at 95% each, one or two may miss 0 by chance.
    assert len(spanning) >= len(FEATURE_NAMES) - 3 and "tempo_bpm" not in spanning


def test_a_planted_taste_for_music_slower_than_asked_is_recovered_from_real_clips():
    """Raters who like music slower than its prompt asks (whatever the prompt) vote on pairs
    of composed clips whose tempos were scaled. The fit on their votes must rank a held-out
    clip above the same clip played faster: the taste's direction, on unseen prompts."""
    rng = random.Random(7)
    prompts = varied_prompts(48)
    features = {}
    for index, prompt in enumerate(prompts):
        piece = compose(parse_prompt(prompt), seed=index, duration_seconds=6.0)
        for factor in (0.8, 0.9, 1.0, 1.1, 1.25):
            scaled = dataclasses.replace(piece, tempo_bpm=round(piece.tempo_bpm * factor))
            features[prompt, factor] = clip_features(prompt, piece_to_events(scaled))
    slower = FEATURE_NAMES.index("tempo_vs_request")
    rows_a, rows_b, targets = [], [], []
    for prompt in prompts[:36]:
        for _ in range(6):
            a, b = rng.sample((0.8, 0.9, 1.0, 1.1, 1.25), 2)
            p_a = expit(-4 * (features[prompt, a][slower] - features[prompt, b][slower]))
            rows_a.append(features[prompt, a])
            rows_b.append(features[prompt, b])
            targets.append(float(rng.random() < p_a))
    model, _ = fit_measured_preference(np.array(rows_a), np.array(rows_b), np.array(targets))

    held_out = prompts[36:]
    slower_wins = [
        model.reward(np.array([features[p, 0.9]]))[0]
        > model.reward(np.array([features[p, 1.1]]))[0]
        for p in held_out
    ]
    assert sum(slower_wins) >= 11, slower_wins  # of 12 held-out prompts


def test_random_votes_give_weights_near_zero():
    rng = np.random.default_rng(3)
    features_a, features_b, _ = synthetic_votes(np.zeros(len(FEATURE_NAMES)), 400, seed=3)
    model, _ = fit_measured_preference(features_a, features_b, rng.integers(0, 2, 400))
    assert np.abs(model.weights).max() < 0.3


def test_a_feature_that_never_varies_gets_no_weight_and_stays_finite():
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2
    features_a, features_b, targets = synthetic_votes(truth, 200, seed=4)
    features_a[:, 1] = features_b[:, 1] = 3.0  # one feature is always 3
    model, _ = fit_measured_preference(features_a, features_b, targets)
    assert np.isfinite(model.weights).all()
    assert model.weights[1] == pytest.approx(0.0, abs=1e-9)


def test_ties_pull_the_margin_towards_zero():
    features_a = np.eye(len(FEATURE_NAMES))[[TEMPO] * 20]
    features_b = np.zeros_like(features_a)
    decisive, _ = fit_measured_preference(features_a, features_b, np.ones(20))
    tied, _ = fit_measured_preference(features_a, features_b, np.full(20, 0.5))
    assert decisive.weights[TEMPO] > 0.5
    assert tied.weights[TEMPO] == pytest.approx(0.0, abs=1e-6)


def test_no_votes_is_an_error():
    empty = np.zeros((0, len(FEATURE_NAMES)))
    with pytest.raises(ValueError, match="no votes"):
        fit_measured_preference(empty, empty, np.zeros(0))


def test_the_reward_reads_each_feature_only_within_the_range_it_was_fitted_on(tmp_path):
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2  # faster is better
    features_a, features_b, targets = synthetic_votes(truth, 200, seed=3)
    model, _ = fit_measured_preference(features_a, features_b, targets)
    clips = np.concatenate([features_a, features_b])
    fastest = clips[np.argmax(clips[:, TEMPO])]

    assert model.high[TEMPO] == fastest[TEMPO] and model.low[TEMPO] == clips[:, TEMPO].min()
    within = fastest.copy()
    within[TEMPO] -= 1.0
    beyond = fastest.copy()
    beyond[TEMPO] += 50.0  # far faster than any clip the raters heard
    rewards = model.reward(np.stack([within, fastest, beyond]))
    # Faster pays inside the range; past it, nothing more.
    assert rewards[0] < rewards[1] == rewards[2]
    # The range is saved with the weights.
    loaded = MeasuredPreferenceModel.load(model.save(tmp_path / "measured.json"))
    assert np.array_equal(loaded.reward(np.stack([beyond])), model.reward(np.stack([beyond])))
    # A file saved before the range was kept reads features unclipped.
    payload = json.loads((tmp_path / "measured.json").read_text())
    del payload["low"], payload["high"]
    (tmp_path / "old.json").write_text(json.dumps(payload))
    old = MeasuredPreferenceModel.load(tmp_path / "old.json")
    assert old.low is None and old.reward(np.stack([beyond]))[0] > rewards[2]


def test_the_scorer_file_round_trips_and_refuses_other_features(tmp_path):
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2
    model, _ = fit_measured_preference(*synthetic_votes(truth, 100, seed=5))
    path = model.save(tmp_path / "measured.json", metadata={"reward_model": "x"})
    loaded = MeasuredPreferenceModel.load(path)
    prompts = ["fast techno", "slow piano ballad"]
    events = [events_for(p, seed=random.Random(i).randrange(100)) for i, p in enumerate(prompts)]
    assert loaded.scores(prompts, events) == model.scores(prompts, events)
    assert features_matrix(prompts, events).shape == (2, len(FEATURE_NAMES))

    payload = json.loads(path.read_text())
    payload["feature_names"] = ["tempo_bpm"]
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="other features"):
        MeasuredPreferenceModel.load(path)


def test_out_of_fold_margins_judge_each_vote_by_a_model_that_never_saw_its_prompt():
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2
    features_a, features_b, targets = synthetic_votes(truth, 400, seed=0)
    prompts = np.arange(400) // 4  # 100 prompts of 4 votes each

    margins = out_of_fold_margins(features_a, features_b, targets, prompts, folds=5)

    # The planted taste is recovered on every vote it did not see: as well as a model
    # fitted on other votes altogether does (0.75 above).
    assert np.mean((margins > 0) == (targets == 1)) > 0.75
    # Changing the votes on one prompt changes no margin of that prompt's own votes: they
    # were scored by a model that never saw them.
    flipped = targets.copy()
    flipped[prompts == 7] = 1 - flipped[prompts == 7]
    again = out_of_fold_margins(features_a, features_b, flipped, prompts, folds=5)
    assert np.array_equal(again[prompts == 7], margins[prompts == 7])
    assert not np.allclose(again[prompts != 7], margins[prompts != 7])
    with pytest.raises(ValueError, match="at least 5 prompts"):
        out_of_fold_margins(features_a[:8], features_b[:8], targets[:8], prompts[:8], folds=5)


def test_a_fit_on_chosen_features_holds_every_other_weight_at_zero():
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2
    votes = synthetic_votes(truth, 300, seed=2)
    model, report = fit_measured_preference(*votes, only=("tempo_bpm", "lead_pitch"))

    weights = model.weights_by_feature()
    assert report["converged"] and weights["tempo_bpm"] > 1.2
    assert weights["lead_pitch"] != 0.0
    assert all(w == 0.0 for name, w in weights.items() if name not in {"tempo_bpm", "lead_pitch"})


def test_a_supported_fit_keeps_the_planted_taste_and_drops_the_noise_weights():
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.1  # a standard deviation is a logit: a taste few votes show clearly
    features_a, features_b, targets = synthetic_votes(truth, 300, seed=6)
    prompts = np.arange(300) // 3

    chosen = fit_supported(features_a, features_b, targets, prompts, resamples=100)

    assert set(chosen.supported) == {"tempo_bpm"} and chosen.supported["tempo_bpm"] > 3.1
    weights = chosen.model.weights_by_feature()
    assert weights["tempo_bpm"] > 0.6
    assert all(w == 0.0 for name, w in weights.items() if name != "tempo_bpm")
    # The full fit spread some weight over the 24 features that carry nothing.
    noise = [abs(w) for name, w in chosen.full.weights_by_feature().items() if name != "tempo_bpm"]
    assert sum(noise) > 0.5
    # On fresh votes of the same raters the supported model predicts at least as well.
    fresh_a, fresh_b, fresh_targets = synthetic_votes(truth, 2000, seed=16)

    def accuracy(model: MeasuredPreferenceModel) -> float:
        margins = model.reward(fresh_a) - model.reward(fresh_b)
        return float(np.mean((margins > 0) == (fresh_targets == 1)))

    assert accuracy(chosen.model) >= accuracy(chosen.full)


def test_when_no_weight_is_supported_the_full_fit_is_kept():
    features_a, features_b, _ = synthetic_votes(np.zeros(len(FEATURE_NAMES)), 300, seed=3)
    coin = np.random.default_rng(3).integers(0, 2, 300).astype(float)

    chosen = fit_supported(features_a, features_b, coin, np.arange(300) // 3, resamples=100)

    assert chosen.supported == {}
    assert np.array_equal(chosen.model.weights, chosen.full.weights)


def test_support_is_a_bonferroni_test_on_the_bootstrap_standard_error():
    # 95% interval half-width 1.96 standard errors: these standard errors are all 0.1.
    intervals = {"a": (0.104, 0.496), "b": (0.004, 0.396), "c": (-0.496, -0.104)}
    weights = {"a": 0.3, "b": 0.2, "c": -0.3}

    # One feature tested: |z| > 1.96. Three: |z| > 2.39. Untested ones are never supported.
    assert supported_features(weights, intervals, ["b"]) == pytest.approx({"b": 2.0}, rel=1e-3)
    assert supported_features(weights, intervals, ["a", "b", "c", "d"]) == pytest.approx(
        {"a": 3.0, "c": -3.0}, rel=1e-3
    )


def test_cross_validation_chooses_each_folds_features_from_that_fold_alone():
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2
    features_a, features_b, targets = synthetic_votes(truth, 300, seed=0)
    prompts = np.arange(300) // 4

    margins = out_of_fold_margins(
        features_a, features_b, targets, prompts, folds=5, support_error=0.05
    )

    assert np.mean((margins > 0) == (targets == 1)) > 0.75
    flipped = targets.copy()
    flipped[prompts == 7] = 1 - flipped[prompts == 7]
    again = out_of_fold_margins(
        features_a, features_b, flipped, prompts, folds=5, support_error=0.05
    )
    assert np.array_equal(again[prompts == 7], margins[prompts == 7])
