import pytest
import torch

from reward.learning import scoring
from reward.learning.nets import RewardNet
from reward.learning.scoring import Scorer, load_scorer, save_scorer, score_clips
from tests.reward_learning.synthetic import (  # one_thread: an autouse fixture
    one_thread,  # noqa: F401
    synthetic_clips,
    tiny_net,
)


@pytest.fixture(scope="module")
def clips():
    return synthetic_clips(12, seed=0, frames=(20, 400))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RewardNet(tiny_net()).eval()


def embeddings(clips) -> torch.Tensor:
    return clips.table.prompt_embeddings[torch.tensor(clips.prompt)]


def test_a_score_does_not_depend_on_the_batch(clips, model):
    """The encoder masks padding: a short clip batched with a 20x longer one scores as alone."""
    mels = clips.table.mels
    batched = score_clips(model, mels, embeddings(clips), batch_size=len(mels))
    alone = torch.stack(
        [model(mel[None], embeddings(clips)[i : i + 1]).detach()[0] for i, mel in enumerate(mels)]
    )
    assert torch.allclose(batched, alone, atol=1e-5)
    assert batched.std() > 0


def test_save_and_load_give_identical_scores(clips, model, tmp_path):
    path = save_scorer(
        tmp_path / "scorers" / "reward.pt",
        model,
        kind="preference",
        config={"batch_size": 4},
        metadata={"metrics": {"heldout_accuracy": 0.7, "low": None}},
    )
    assert [p.name for p in path.parent.iterdir()] == ["reward.pt"]  # no temporary left
    scorer = load_scorer(path)
    assert (scorer.kind, scorer.config) == ("preference", {"batch_size": 4})
    assert scorer.metadata == {"metrics": {"heldout_accuracy": 0.7, "low": None}}
    assert not scorer.model.training
    expected = Scorer(model, "preference").score(clips.table.mels, embeddings(clips))
    assert torch.equal(scorer.score(clips.table.mels, embeddings(clips)), expected)


def test_unknown_kinds_are_refused_and_lazy_kinds_imported(model, tmp_path, monkeypatch):
    monkeypatch.setattr(scoring, "SCORER_LOADERS", dict(scoring.SCORER_LOADERS))
    monkeypatch.setattr(scoring, "LOADER_MODULES", {"lazy": "lazy_scorer_kind"})
    save_scorer(tmp_path / "odd.pt", model, kind="odd", config={}, metadata={})
    with pytest.raises(ValueError, match="no loader"):
        load_scorer(tmp_path / "odd.pt")
    # a kind's module registers its loader when load_scorer first meets the kind
    (tmp_path / "lazy_scorer_kind.py").write_text(
        "from reward.learning.scoring import load_reward_net, register_scorer_loader\n"
        "register_scorer_loader('lazy', load_reward_net)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    save_scorer(tmp_path / "lazy.pt", model, kind="lazy", config={}, metadata={})
    assert load_scorer(tmp_path / "lazy.pt").kind == "lazy"
