"""A preference model over measured musical features, for symbolic generators.

A few hundred votes cannot train an audio network from scratch (the learned preference model
stays near chance on them), but they do pin down a couple of dozen weights. This model reads
what a listener notices in a clip, measured from its notes (`generation/music/listening.py`):
tempo, arrangement, harmony, activity, register and brightness, rhythm and touch, repetition,
and how each of the requested attributes fits the prompt, signed where above and below the
request differ (faster or slower than asked). Its reward is a weighted sum of those features,
and the weights are fitted to the votes by Bradley-Terry maximum likelihood:

    r(clip) = w . z(features(prompt, clip)),   P(a preferred over b) = sigmoid(r(a) - r(b))

z standardises each feature by its training mean and spread, so a weight reads as "logits
per standard deviation" and the L2 penalty treats every feature alike. The fit is a convex
problem, solved with scipy's L-BFGS; the weights are a small JSON file that any process can
score with, torch or not. A taste that none of these features expresses (timbre, say) is
beyond this model: that is what the audio model is for, given enough votes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from generation.music.events import events_to_piece
from generation.music.listening import LISTENING_FEATURES, listening_features
from generation.music.prompts import parse_prompt

FORMAT = "musicpref-measured-preference-v2"  # v1 had a dozen features; it is not read
FEATURE_NAMES: tuple[str, ...] = LISTENING_FEATURES


def clip_features(prompt_text: str, events: Sequence[str]) -> list[float]:
    """The features of one clip for its prompt, in FEATURE_NAMES order."""
    values = listening_features(parse_prompt(prompt_text), events_to_piece(list(events)))
    return [values[name] for name in FEATURE_NAMES]


def features_matrix(prompts: Sequence[str], events: Sequence[Sequence[str]]) -> np.ndarray:
    """(len(prompts), len(FEATURE_NAMES)) float64."""
    rows = [clip_features(p, e) for p, e in zip(prompts, events, strict=True)]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


@dataclass(frozen=True)
class MeasuredPreferenceConfig:
    # L2 penalty on the standardised weights, per vote: it keeps a feature that never varied
    # or that few votes touched near 0, and makes the optimum unique when features correlate.
    l2: float = 0.01
    max_iterations: int = 500


@dataclass
class MeasuredPreferenceModel:
    """The fitted reward: standardisation and weights, one per feature."""

    feature_names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    # The lowest and highest value of each feature among the clips it was fitted on. The
    # reward reads a feature only within that range: the votes say nothing about a clip
    # beyond it, and a linear reward extrapolated there pays RL without bound for what no
    # rater heard. A `prefers_darker` loop's model weighed the tempo against the request
    # (-0.41 per sd, from tempo variants of 0.8x and 1.25x: a slower 4-s clip plays fewer of
    # its bars, and the first ones' lead sits lower), and RL slowed its plans far past any
    # variant (held-out plans' tempo fit 0.035) instead of moving the mode and the lead the
    # taste is about: 0.837 [0.786, 0.878]. None (files saved before): no limit.
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def reward(self, features: np.ndarray) -> np.ndarray:
        if self.low is not None and self.high is not None:
            features = np.clip(features, self.low, self.high)
        return ((features - self.mean) / self.scale) @ self.weights

    def scores(self, prompts: Sequence[str], events: Sequence[Sequence[str]]) -> list[float]:
        return [float(v) for v in self.reward(features_matrix(prompts, events))]

    def weights_by_feature(self) -> dict[str, float]:
        """Logits per standard deviation of each feature: what the raters reward."""
        return {name: float(w) for name, w in zip(self.feature_names, self.weights, strict=True)}

    def save(self, path: Path | str, *, metadata: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "feature_names": list(self.feature_names),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "low": None if self.low is None else self.low.tolist(),
            "high": None if self.high is None else self.high.tolist(),
            "metadata": metadata or {},
        }
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(payload, indent=2))
        temporary.replace(path)  # readers never see a half-written file
        return path

    @classmethod
    def load(cls, path: Path | str) -> MeasuredPreferenceModel:
        payload = json.loads(Path(path).read_text())
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file")
        if tuple(payload["feature_names"]) != FEATURE_NAMES:
            raise ValueError(f"{path} was fitted on other features: {payload['feature_names']}")
        return cls(
            feature_names=FEATURE_NAMES,
            mean=np.asarray(payload["mean"], dtype=np.float64),
            scale=np.asarray(payload["scale"], dtype=np.float64),
            weights=np.asarray(payload["weights"], dtype=np.float64),
            low=_optional_array(payload.get("low")),
            high=_optional_array(payload.get("high")),
        )


def _optional_array(values: list[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def _objective(
    weights: np.ndarray, differences: np.ndarray, targets: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """Mean binary cross-entropy of sigmoid(d . w) against soft targets, plus l2 |w|^2; and
    its gradient. log_expit keeps large margins finite."""
    margins = differences @ weights
    likelihood = targets * special.log_expit(margins) + (1 - targets) * special.log_expit(-margins)
    loss = -np.mean(likelihood)
    gradient = differences.T @ (special.expit(margins) - targets) / len(targets)
    return float(loss + l2 * weights @ weights), gradient + 2 * l2 * weights


def fit_measured_preference(
    features_a: np.ndarray,
    features_b: np.ndarray,
    targets: np.ndarray,
    config: MeasuredPreferenceConfig | None = None,
    *,
    only: Sequence[str] | None = None,
) -> tuple[MeasuredPreferenceModel, dict[str, Any]]:
    """Bradley-Terry fit on votes: row i says P(clip a_i preferred over b_i) = targets[i]
    (1, 0, or 0.5 for a tie). `only`: fit just these features, every other weight held at 0.
    Returns the model and how the optimiser ended."""
    config = config or MeasuredPreferenceConfig()
    features_a = np.asarray(features_a, dtype=np.float64)
    features_b = np.asarray(features_b, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if not len(targets):
        raise ValueError("no votes to fit")
    clips = np.concatenate([features_a, features_b])
    mean = clips.mean(axis=0)
    spread = clips.std(axis=0)
    # A feature that never varies in the data carries no information: scale 1 keeps it finite
    # and the penalty keeps its weight at 0.
    scale = np.where(spread > 1e-9, spread, 1.0)
    differences = (features_a - features_b) / scale
    fitted = np.array(
        [only is None or name in only for name in FEATURE_NAMES], dtype=bool
    )  # fmt: skip
    result = optimize.minimize(
        _objective,
        np.zeros(int(fitted.sum())),
        args=(differences[:, fitted], targets, config.l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": config.max_iterations},
    )
    weights = np.zeros(len(FEATURE_NAMES))
    weights[fitted] = result.x
    model = MeasuredPreferenceModel(
        FEATURE_NAMES, mean, scale, weights, low=clips.min(axis=0), high=clips.max(axis=0)
    )
    report = {
        "converged": bool(result.success),
        "iterations": int(result.nit),
        "final_loss": float(result.fun),
        "config": asdict(config),
    }
    return model, report


def weight_intervals(
    features_a: np.ndarray,
    features_b: np.ndarray,
    targets: np.ndarray,
    clusters: np.ndarray,
    config: MeasuredPreferenceConfig | None = None,
    *,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95% percentile-bootstrap interval of each weight: the fit repeated on votes resampled
    by cluster (the prompts: votes on one prompt's clips are not independent), so a weight
    whose interval spans 0 is one the votes do not pin down."""
    clusters = np.asarray(clusters)
    names, inverse = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inverse == index) for index in range(len(names))]
    config = config or MeasuredPreferenceConfig()

    def refit(chosen: np.ndarray) -> np.ndarray:
        rows = np.concatenate([members[int(index)] for index in chosen])
        model, _ = fit_measured_preference(
            features_a[rows], features_b[rows], targets[rows], config
        )
        return model.weights

    if len(members) < 2:
        raise ValueError("bootstrapping needs votes on at least two prompts")
    result = stats.bootstrap(
        (np.arange(len(members)),),
        refit,
        vectorized=False,
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return {name: (float(a), float(b)) for name, a, b in zip(FEATURE_NAMES, low, high, strict=True)}


# The family-wise error at which a weight counts as supported by the votes: each feature's
# two-sided test is at SUPPORT_ERROR / (number of features tested) (Bonferroni), so that the
# noise in some twenty weights does not pass for a taste. In a `prefers_slower` run, drums
# (+0.20 [+0.02, +0.39]) and brightness had 95% intervals clear of 0 as well as tempo against
# the request (-0.47 [-0.69, -0.27]).
SUPPORT_ERROR = 0.05


def supported_features(
    weights: dict[str, float],
    intervals: dict[str, Sequence[float]],
    tested: Sequence[str],
    error: float = SUPPORT_ERROR,
) -> dict[str, float]:
    """The tested features whose weights the votes support, with their z-scores: |weight| /
    its standard error beyond the normal quantile of a two-sided test at `error` shared
    among the tested features, the standard error read off the weight's 95% bootstrap
    interval. Features without a weight or an interval are not tested."""
    z_scores = weight_z_scores(weights, intervals, tested)
    threshold = support_threshold(len(z_scores), error)
    return {name: z for name, z in z_scores.items() if abs(z) > threshold}


def support_threshold(tested: int, error: float = SUPPORT_ERROR) -> float:
    """The |z| a weight must pass to count as supported among `tested` features."""
    return float(stats.norm.ppf(1 - error / 2 / max(1, tested)))


def weight_z_scores(
    weights: dict[str, float], intervals: dict[str, Sequence[float]], tested: Sequence[str]
) -> dict[str, float]:
    """Each tested feature's weight over its standard error, read off its 95% bootstrap
    interval (0 for an interval of no width); features without a weight or an interval are
    left out."""
    z_scores = {}
    for name in tested:
        if name not in weights or name not in intervals:
            continue
        low, high = intervals[name]
        standard_error = (high - low) / (2 * stats.norm.ppf(0.975))
        z_scores[name] = float(weights[name] / standard_error) if standard_error > 0 else 0.0
    return z_scores


@dataclass
class SupportedFit:
    """A fit on the features the votes support: the model (refitted on them alone, or the
    full fit when none is supported on its own), the full fit with its bootstrap intervals,
    and which features were kept."""

    model: MeasuredPreferenceModel
    report: dict[str, Any]
    full: MeasuredPreferenceModel
    intervals: dict[str, tuple[float, float]]
    supported: dict[str, float]  # feature -> z of its full-fit weight


def fit_supported(
    features_a: np.ndarray,
    features_b: np.ndarray,
    targets: np.ndarray,
    clusters: np.ndarray,
    config: MeasuredPreferenceConfig | None = None,
    *,
    error: float = SUPPORT_ERROR,
    resamples: int = 200,
) -> SupportedFit:
    """Fit every feature, bootstrap the weights by cluster, keep the features whose weights
    are supported (`supported_features` over all of them) and refit on those alone. A reward
    that RL optimises moves whatever its weights reward: weights the votes do not pin down
    are noise that RL would chase as readily as the taste, and features that move together
    (an instrument fewer is also sparser, quieter and less polyphonic) split one taste into
    weights none of which stands out; the refit gives the supported ones the whole of it."""
    full, report = fit_measured_preference(features_a, features_b, targets, config)
    intervals = weight_intervals(
        features_a, features_b, targets, clusters, config, resamples=resamples
    )
    supported = supported_features(full.weights_by_feature(), intervals, FEATURE_NAMES, error)
    model = full
    if supported:
        model, report = fit_measured_preference(
            features_a, features_b, targets, config, only=tuple(supported)
        )
    return SupportedFit(model, report, full, intervals, supported)


def out_of_fold_margins(
    features_a: np.ndarray,
    features_b: np.ndarray,
    targets: np.ndarray,
    prompts: np.ndarray,
    config: MeasuredPreferenceConfig | None = None,
    *,
    folds: int = 5,
    seed: int = 0,
    support_error: float = 0.0,
) -> np.ndarray:
    """Cross-validated r(a) - r(b) of every vote: the prompts dealt at random into `folds`
    folds, and each fold's votes scored by the model fitted on the other folds' votes, so
    every vote is judged by a model that never saw its prompt. A held-out fifth judges a
    fifth of the votes; this judges all of them, which a taste that only some pairs show
    (a tempo taste, where most pairs play the same tempo) needs to be told from chance.
    (The folds are three lines of numpy; scikit-learn's GroupKFold would be a dependency for
    them.) With `support_error`, each fold's model is chosen as the final one is
    (`fit_supported`, on that fold's training votes alone), so the selection is judged too."""
    prompts = np.asarray(prompts)
    names, inverse = np.unique(prompts, return_inverse=True)
    if len(names) < folds:
        raise ValueError(f"cross-validation needs votes on at least {folds} prompts")
    fold_of_prompt = np.random.default_rng(seed).permutation(len(names)) % folds
    fold = fold_of_prompt[inverse]
    margins = np.empty(len(targets), dtype=np.float64)
    for index in range(folds):
        held, kept = fold == index, fold != index
        if support_error:
            model = fit_supported(
                features_a[kept], features_b[kept], targets[kept], prompts[kept], config,
                error=support_error,
            ).model  # fmt: skip
        else:
            model, _ = fit_measured_preference(
                features_a[kept], features_b[kept], targets[kept], config
            )
        margins[held] = model.reward(features_a[held]) - model.reward(features_b[held])
    return margins


def log_likelihood_per_vote(
    model: MeasuredPreferenceModel,
    features_a: np.ndarray,
    features_b: np.ndarray,
    targets: np.ndarray,
) -> float:
    """Mean log-likelihood of the votes under the model (nats; log 0.5 = chance)."""
    margins = model.reward(np.asarray(features_a)) - model.reward(np.asarray(features_b))
    targets = np.asarray(targets, dtype=np.float64)
    values = targets * special.log_expit(margins) + (1 - targets) * special.log_expit(-margins)
    return float(np.mean(values)) if len(values) else math.nan
