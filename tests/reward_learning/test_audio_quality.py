"""The quality reward model on synthetic clips of known quality (one band's level, which band
depending on the prompt), rated 1-5 by raters with their own offsets and spreads."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from reward.learning.audio_quality import QualityConfig, train_quality
from reward.learning.loop import Cancelled
from reward.learning.metrics import pearson
from reward.learning.scoring import load_scorer
from tests.reward_learning.synthetic import (  # one_thread: an autouse fixture
    loop_config,
    one_thread,  # noqa: F401
    synthetic_clips,
    synthetic_ratings,
    tiny_net,
)

CLIPS = 360


@pytest.fixture(scope="module")
def data():
    clips = synthetic_clips(CLIPS, seed=1)
    ids = np.arange(CLIPS)
    train = synthetic_ratings(clips, ids[ids % 3 != 0], seed=2)
    test = synthetic_ratings(clips, ids[ids % 3 == 0], seed=3)
    return clips, train, test


def config(**loop) -> QualityConfig:
    return QualityConfig(
        net=tiny_net(),
        loop=loop_config(**loop),
        batch_size=32,
        crop_seconds=1.0,
        score_batch_size=64,
        bootstrap_resamples=500,
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    clips, train, test = data
    return train_quality(config(), clips.table, train, test, tmp_path_factory.mktemp("run"))


def test_learns_quality_up_to_the_rating_noise(data, trained):
    clips, _, test = data
    clip, _, mean_rating, _ = test.per_group()
    # what knowing each clip's true quality exactly would achieve, about 0.85
    optimum = pearson(clips.quality[clip.numpy()], mean_rating.numpy())
    metrics = trained.metrics
    assert metrics["heldout_pearson"] > optimum - 0.07
    assert metrics["heldout_pearson_low"] > 0.65
    assert metrics["heldout_pearson_low"] < metrics["heldout_pearson"]
    assert metrics["heldout_pearson"] < metrics["heldout_pearson_high"]
    assert metrics["heldout_spearman"] > 0.7
    assert metrics["heldout_mse"] < 0.5 * float(mean_rating.var())
    assert (metrics["heldout_clips"], metrics["heldout_ratings"]) == (len(clip), len(test))
    assert metrics["train_pearson"] > 0.75
    curve = [entry for entry in trained.history if "heldout_mse" in entry]
    assert [entry["step"] for entry in curve] == [50, 100, 150]
    assert curve[-1]["heldout_pearson"] == pytest.approx(metrics["heldout_pearson"])


def test_shuffled_ratings_learn_nothing(data, trained, tmp_path):
    """The control: ratings shuffled across clips carry no information about the audio, so
    held-out predictions must be no better than the mean rating (they would be if evaluation
    leaked ratings or clips). The MSE is the sharp test (0.80-0.82 over six seeds, against
    0.81 for the mean and 0.24 with the real ratings); a correlation is not, since a random
    function of one band's level still correlates with quality (-0.09 to 0.28 over seeds)."""
    clips, train, test = data
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    shuffled = train.subset(torch.arange(len(train)))
    shuffled.target = train.target[order]
    metrics = train_quality(config(), clips.table, shuffled, test, tmp_path).metrics
    _, _, mean_rating, _ = test.per_group()
    mean_mse = float(((mean_rating - mean_rating.mean()) ** 2).mean())
    assert metrics["heldout_mse"] > 0.95 * mean_mse
    assert abs(metrics["heldout_pearson"]) < 0.4 < trained.metrics["heldout_pearson"] - 0.3


def test_scorer_file_and_resume(data, trained, tmp_path):
    clips, train, test = data
    mels = clips.table.mels
    embeddings = clips.table.prompt_embeddings[torch.tensor(clips.prompt)]
    scorer = load_scorer(trained.save(tmp_path / "quality.pt"))
    assert scorer.kind == "quality"
    assert torch.equal(scorer.score(mels, embeddings), trained.scorer().score(mels, embeddings))

    settings = replace(config(steps=12, checkpoint_every=4, eval_every=5), batch_size=8)
    small, test = train.subset(torch.arange(100)), test.subset(torch.arange(30))

    def cancel_at_6(step, total, entry):
        if step == 6:
            raise Cancelled

    with pytest.raises(Cancelled):
        train_quality(settings, clips.table, small, test, tmp_path / "a", cancel_at_6)
    resumed = train_quality(settings, clips.table, small, test, tmp_path / "a")
    straight = train_quality(settings, clips.table, small, test, tmp_path / "b")
    assert (resumed.resumed_from, resumed.metrics["steps"]) == (6, 12)
    assert resumed.history == straight.history
    assert resumed.metrics == {**straight.metrics, "resumed_from": 6}


def test_config_round_trip_and_an_empty_test_set(data, tmp_path):
    settings = replace(config(steps=3, eval_every=2), bootstrap_resamples=100)
    assert QualityConfig.from_dict(settings.to_dict()) == settings
    clips, train, test = data
    result = train_quality(settings, clips.table, train, test.subset([]), tmp_path)
    assert (result.metrics["heldout_clips"], result.metrics["heldout_ratings"]) == (0, 0)
    assert result.metrics["train_clips"] == 240
