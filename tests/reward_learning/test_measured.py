"""The measured-feature preference model: features read from the notes, a Bradley-Terry fit
that recovers a known taste from votes, and a scorer file that round-trips exactly."""

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
)

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


def test_random_votes_give_weights_near_zero():
    rng = np.random.default_rng(3)
    features_a, features_b, _ = synthetic_votes(np.zeros(len(FEATURE_NAMES)), 400, seed=3)
    model, _ = fit_measured_preference(features_a, features_b, rng.integers(0, 2, 400))
    assert np.abs(model.weights).max() < 0.3


def test_a_feature_that_never_varies_gets_no_weight_and_stays_finite():
    truth = np.zeros(len(FEATURE_NAMES))
    truth[TEMPO] = 0.2
    features_a, features_b, targets = synthetic_votes(truth, 200, seed=4)
    features_a[:, 1] = features_b[:, 1] = 3.0  # melodic_instruments: always 3
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
