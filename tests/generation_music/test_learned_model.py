import subprocess
import sys

import pytest
import torch

from generation.music import render
from generation.music.backends import get_backend
from generation.music.interface import GeneratedClip
from generation.music.learned import SCORING_CHUNK, SamplingConfig, SymbolicTransformerBackend
from generation.music.model import SIZES as FIRST_SIZES
from generation.music.model import MusicGPT, text_scale
from generation.music.planned import SIZES, PlannedMusicGPT
from generation.music.text_encoder import get_text_encoder
from generation.music.tokenizer import BAR_ID, EOS_ID, PAD_ID, decode_plan

PROMPTS = ["slow sad piano ballad", "fast techno with drums", "jazz trio in F major"]


# The planned generator, and the first one (whose checkpoints must keep loading): both sit
# behind the one interface, so the interface's tests run on each.
ARCHITECTURES = {
    "planned": lambda: PlannedMusicGPT(SIZES["tiny"]),
    "first": lambda: MusicGPT(FIRST_SIZES["tiny"]),
}


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder()


@pytest.fixture(params=sorted(ARCHITECTURES))
def architecture(request) -> str:
    return request.param


def make_backend(encoder, architecture: str = "planned", **sampling) -> SymbolicTransformerBackend:
    torch.manual_seed(0)
    model = ARCHITECTURES[architecture]().eval()
    return SymbolicTransformerBackend(
        model, sampling=SamplingConfig(max_bars=2, **sampling), text_encoder=encoder
    )


def test_text_encoder_gives_normalised_prompt_dependent_embeddings(encoder):
    vectors = encoder.encode(PROMPTS[:2] + PROMPTS[:1])

    assert vectors.shape == (3, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.equal(vectors[0], vectors[2])
    assert float(vectors[0] @ vectors[1]) < 0.9


@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "top_k": 50, "top_p": 0.9}])
def test_seq_logprobs_of_a_sample_equal_the_log_probs_recorded_while_sampling(
    encoder, architecture, sampling
):
    backend = make_backend(encoder, architecture, **sampling)
    samples = backend.sample(PROMPTS, 2, seed=5)

    rescored = backend.seq_logprobs([s.prompt for s in samples], [s.token_ids for s in samples])

    recorded = torch.tensor([s.logprob for s in samples], dtype=torch.float64)
    assert rescored.shape == (6,)
    torch.testing.assert_close(rescored.detach(), recorded, atol=1e-4, rtol=0)


def test_scoring_in_length_chunks_keeps_each_sequence_s_own_log_prob_and_gradient(
    encoder, architecture
):
    """More sequences than one chunk, of many lengths: each total (and each one's gradient)
    is that of the sequence scored alone, in the caller's order."""
    backend = make_backend(encoder, architecture)
    samples = backend.sample(PROMPTS, 2 * SCORING_CHUNK // len(PROMPTS) + 1, seed=3)
    assert len(samples) > SCORING_CHUNK and len({len(s.token_ids) for s in samples}) > 3
    prompts, ids = [s.prompt for s in samples], [s.token_ids for s in samples]

    together = backend.seq_logprobs(prompts, ids)

    alone = torch.cat([backend.seq_logprobs([p], [i]) for p, i in zip(prompts, ids, strict=True)])
    torch.testing.assert_close(together.detach(), alone.detach(), atol=1e-4, rtol=0)
    weights = torch.arange(len(samples), dtype=torch.float64)
    (weights * together).sum().backward()
    combined = [p.grad.clone() for p in backend.model.parameters() if p.grad is not None]
    backend.model.zero_grad()
    (weights * alone).sum().backward()
    again = [p.grad for p in backend.model.parameters() if p.grad is not None]
    assert len(combined) == len(again) > 0
    for first, second in zip(combined, again, strict=True):
        # float32 sums in another order: equal to a millionth of the gradient's size, where a
        # sequence scored against another's padding or prompt would differ by its whole size
        assert float((first - second).norm()) <= 1e-5 * float(first.norm()) + 1e-8


GRADIENT_CHECKS = {
    "planned": (
        "planner.prefix.weight",
        "planner.tok_emb.weight",
        "planner.blocks.0.attn.qkv.weight",
        "body.tok_emb.weight",
        "body.plan_emb.weight",
        "body.blocks.0.attn.qkv.weight",
    ),
    "first": ("prefix.weight", "tok_emb.weight", "blocks.0.attn.qkv.weight"),
}


def test_gradients_flow_through_seq_logprobs_into_every_part_of_the_model(encoder, architecture):
    backend = make_backend(encoder, architecture)
    samples = backend.sample(PROMPTS[:2], 1, seed=1)
    backend.model.train()

    backend.seq_logprobs(PROMPTS[:2], [s.token_ids for s in samples]).sum().backward()

    for name in GRADIENT_CHECKS[architecture]:
        grad = dict(backend.model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_the_body_never_reads_the_prompt_and_the_planner_never_reads_the_notes(encoder):
    """Two prompts, one sequence: only the plan's log-probs differ; and a change of the notes
    leaves the plan's log-probs alone."""
    backend = make_backend(encoder)
    (sample,) = backend.sample(PROMPTS[:1], 1, seed=6)
    ids = sample.token_ids
    plan_length = ids.index(BAR_ID) + 1  # the plan and its closing Bar

    with torch.no_grad():
        per_prompt, _ = backend.token_logprobs(PROMPTS[:2], [ids, ids])
        changed = [*ids[:plan_length], *reversed(ids[plan_length:-1]), ids[-1]]
        notes_changed, _ = backend.token_logprobs(PROMPTS[:1], [changed])

    assert not torch.allclose(per_prompt[0, :plan_length], per_prompt[1, :plan_length])
    torch.testing.assert_close(per_prompt[0, plan_length:], per_prompt[1, plan_length:])
    torch.testing.assert_close(notes_changed[0, :plan_length], per_prompt[0, :plan_length])


def test_samples_are_reproducible_framed_and_prompt_major(encoder, architecture):
    backend = make_backend(encoder, architecture)

    first = backend.sample(PROMPTS[:2], 3, seed=11)
    again = backend.sample(PROMPTS[:2], 3, seed=11)

    assert [s.prompt for s in first] == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    for sample in first:
        assert PAD_ID not in sample.token_ids
        assert (
            sample.token_ids[-1] == EOS_ID
            or sample.token_ids.count(BAR_ID) == 3
            or len(sample.token_ids) == backend.model.max_sequence_tokens
        )
        assert len(sample.logprobs) == len(sample.token_ids)
        assert sample.piece.bars <= 2
        assert (sample.plan == decode_plan(sample.token_ids)) and (
            (sample.plan is not None) == (architecture == "planned")
        )


def test_save_load_and_the_registry_give_the_same_model(encoder, architecture, tmp_path):
    backend = make_backend(encoder, architecture)
    samples = backend.sample(PROMPTS[:1], 2, seed=2)
    path = backend.save(tmp_path / "generator.pt")

    loaded = SymbolicTransformerBackend.load(path, text_encoder=encoder)
    registered = get_backend("symbolic", {"checkpoint": str(path), "temperature": 0.9})

    ids = [s.token_ids for s in samples]
    torch.testing.assert_close(
        loaded.seq_logprobs(PROMPTS[:1] * 2, ids), backend.seq_logprobs(PROMPTS[:1] * 2, ids)
    )
    assert registered.sampling.temperature == 0.9
    assert loaded.config_description()["parameters"] == backend.model.num_parameters()
    assert loaded.config_description()["model"] == backend.model.config.to_dict()
    assert type(loaded.model) is type(backend.model)


@pytest.mark.parametrize("ancestor", ["first", "first planned", "parent"])
def test_the_older_shipped_checkpoints_still_load_sample_and_score(encoder, ancestor):
    """The shipped generator's ancestors (the first learned generator, the first planned
    one, whose body has no melody tallies, and its parent) are registered as its parents:
    their files must keep working."""
    from generation.music import backends

    checkpoint = {
        "first": backends.FIRST_GENERATOR,
        "first planned": backends.FIRST_PLANNED_GENERATOR,
        "parent": backends.PARENT_GENERATOR,
    }[ancestor]
    backend = SymbolicTransformerBackend.load(checkpoint, text_encoder=encoder)
    samples = backend.sample(PROMPTS[:2], 1, seed=0)

    if ancestor == "first":
        assert isinstance(backend.model, MusicGPT) and all(s.plan is None for s in samples)
    else:
        assert isinstance(backend.model, PlannedMusicGPT)
        assert (backend.model.body.melody is None) == (ancestor == "first planned")
        assert all(s.plan is not None for s in samples)
    rescored = backend.seq_logprobs([s.prompt for s in samples], [s.token_ids for s in samples])
    recorded = torch.tensor([s.logprob for s in samples], dtype=torch.float64)
    torch.testing.assert_close(rescored.detach(), recorded, atol=1e-3, rtol=0)


def test_prompt_statistics_stay_finite_and_bounded_for_a_constant_dimension():
    embeddings = torch.randn(64, 384) * 0.05
    embeddings[:, 7] = 0.25  # a dimension no prompt varies, as MiniLM has a few
    embeddings[:, 9] = 0.25 + 1e-9 * torch.randn(64)

    scale = text_scale(embeddings)

    assert torch.isfinite(scale).all()
    typical = float(scale.median())
    # floored at a tenth of the median std: at most ten times a typical dimension's scale
    assert float(scale.max()) <= 10 * typical * (1 + 1e-3)
    unfloored = 1.0 / (embeddings.std(0) * 384**0.5 + 1e-6)  # the formula before the floor
    assert float(unfloored[7]) > 1e5


def test_generate_returns_a_clip_of_the_requested_length_like_the_composer(encoder):
    clip = make_backend(encoder).generate("fast techno with drums", seed=4, duration_seconds=6)

    audio, sample_rate = render.decode_audio(clip.audio_bytes)
    assert isinstance(clip, GeneratedClip)
    assert clip.duration_seconds == 6.0 and clip.caption == "fast techno with drums"
    assert abs(len(audio) - 6 * sample_rate) <= 960
    assert "adherence" in clip.attributes and clip.attributes["drums"] is True


def test_unknown_sampling_keys_and_a_missing_checkpoint_are_refused():
    with pytest.raises(ValueError, match="unknown sampling"):
        SamplingConfig.from_dict({"temprature": 1.0})
    with pytest.raises(ValueError, match="checkpoint"):
        get_backend("symbolic", {})


def test_importing_the_backend_registry_does_not_import_torch():
    code = (
        "import sys, generation.music, generation.music.backends as b; "
        "assert 'symbolic' in b.available_backends(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=".")


def test_sampling_for_a_clip_writes_only_the_bars_it_plays_and_the_clip_is_the_same(encoder):
    """RL's rewards hear clips, so RL samples only the bars a clip plays (`heard_seconds`):
    each row stops at the bar budget its own Tempo gives, its tokens are the first tokens of
    the row sampled in full with the same seed, and the clip a listener hears is the same."""
    from generation.music import backends
    from generation.music.composer import bars_for

    backend = SymbolicTransformerBackend.load(backends.SHIPPED_GENERATOR, text_encoder=encoder)
    prompts = ["slow sad piano ballad at 60 bpm", "happy pop song at 100 bpm",
               "fast techno at 170 bpm", "calm lofi hip hop beat"]  # fmt: skip

    full = backend.sample(prompts, 2, seed=3)
    heard = backend.sample(prompts, 2, seed=3, heard_seconds=4.0)

    budgets = set()
    for whole, cut in zip(full, heard, strict=True):
        budget = min(backend.sampling.max_bars, bars_for(4.0, cut.piece.tempo_bpm))
        budgets.add(budget)
        assert cut.token_ids == whole.token_ids[: len(cut.token_ids)]
        assert cut.well_formed and cut.piece.bars <= budget
        assert backend.clip_piece(cut, 4.0).notes == backend.clip_piece(whole, 4.0).notes
    assert len(budgets) >= 2  # tempos that need different numbers of bars (1, 2 and 3 here)
    # 0.57 of the tokens here.
    assert sum(map(len, (s.token_ids for s in heard))) < 0.8 * sum(
        map(len, (s.token_ids for s in full))
    )


def test_clips_made_together_are_the_clips_made_one_by_one(encoder):
    """Campaigns make their clips in batches (`generate_many`), each row from its own seed:
    a clip does not depend on the others in its batch, so it is the clip `generate` makes
    alone, and a retried job remakes the same clip whatever else it runs with."""
    from generation.music import backends

    backend = SymbolicTransformerBackend.load(backends.SHIPPED_GENERATOR, text_encoder=encoder)
    ballad = "slow sad piano ballad at 60 bpm"
    requests = [(ballad, 11), ("fast techno at 170 bpm", 12), ("calm lofi hip hop beat", 13),
                (ballad, 14)]  # fmt: skip

    together = backend.generate_many(requests, duration_seconds=4.0)
    reversed_batch = backend.generate_many(requests[::-1], duration_seconds=4.0)[::-1]
    alone = [backend.generate(prompt, seed=seed, duration_seconds=4.0) for prompt, seed in requests]

    for batched, other_batch, single in zip(together, reversed_batch, alone, strict=True):
        assert batched.events == other_batch.events == single.events
        assert batched.attributes == single.attributes
        # The same sound (the files differ in their Ogg stream's random serial number).
        assert torch.equal(
            torch.as_tensor(render.decode_audio(batched.audio_bytes)[0]),
            torch.as_tensor(render.decode_audio(single.audio_bytes)[0]),
        )
    # The same prompt with another seed is another clip: the rows do not share one draw.
    assert together[0].events != together[3].events


@pytest.mark.parametrize("model", ["shipped", "first"])
def test_dropping_the_rows_that_ended_from_the_batch_changes_no_sample(encoder, monkeypatch, model):
    """Sampling drops rows that ended from the model's batch (`StepSampler.drop_finished`),
    which only saves time: every row's tokens and log-probs are what running the whole batch
    to its longest row gives (the log-probs up to rounding), from one generator or one per
    row."""
    from generation.music import backends
    from generation.music.model import StepSampler

    if model == "shipped":  # the planned generator, with its melody features
        backend = SymbolicTransformerBackend.load(backends.SHIPPED_GENERATOR, text_encoder=encoder)
    else:
        backend = make_backend(encoder, "first")
    prompts = [*PROMPTS, "calm lofi hip hop beat", "fast techno at 170 bpm"]

    def both_ways():
        return [
            *backend.sample(prompts, 3, seed=7),
            *backend.sample(prompts, 2, seed=8, heard_seconds=4.0),
            *backend.sample_seeded(prompts, list(range(len(prompts)))),
        ]

    dropped = both_ways()
    monkeypatch.setattr(StepSampler, "drop_finished", lambda self: None)
    whole_batch = both_ways()

    for with_drops, without in zip(dropped, whole_batch, strict=True):
        assert with_drops.token_ids == without.token_ids
        # Up to rounding: a smaller batch's matrix products round differently (1.2e-5 seen).
        torch.testing.assert_close(with_drops.logprobs, without.logprobs, atol=1e-4, rtol=0)
    lengths = [len(sample.token_ids) for sample in dropped]
    assert max(lengths) > 2 * min(lengths)  # rows ended far apart: rows were dropped
