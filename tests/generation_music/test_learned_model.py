import subprocess
import sys

import pytest
import torch

from generation.music import render
from generation.music.backends import GeneratedClip, get_backend
from generation.music.learned import SCORING_CHUNK, SamplingConfig, SymbolicTransformerBackend
from generation.music.model import SIZES, MusicGPT
from generation.music.text_encoder import get_text_encoder
from generation.music.tokenizer import BAR_ID, EOS_ID, PAD_ID

PROMPTS = ["slow sad piano ballad", "fast techno with drums", "jazz trio in F major"]


@pytest.fixture(scope="module")
def encoder():
    return get_text_encoder()


def make_backend(encoder, **sampling) -> SymbolicTransformerBackend:
    torch.manual_seed(0)
    model = MusicGPT(SIZES["tiny"]).eval()
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
def test_seq_logprobs_of_a_sample_equal_the_log_probs_recorded_while_sampling(encoder, sampling):
    backend = make_backend(encoder, **sampling)
    samples = backend.sample(PROMPTS, 2, seed=5)

    rescored = backend.seq_logprobs([s.prompt for s in samples], [s.token_ids for s in samples])

    recorded = torch.tensor([s.logprob for s in samples], dtype=torch.float64)
    assert rescored.shape == (6,)
    torch.testing.assert_close(rescored.detach(), recorded, atol=1e-4, rtol=0)


def test_scoring_in_length_chunks_keeps_each_sequence_s_own_log_prob_and_gradient(encoder):
    """More sequences than one chunk, of many lengths: each total (and each one's gradient)
    is that of the sequence scored alone, in the caller's order."""
    backend = make_backend(encoder)
    samples = backend.sample(PROMPTS, 2 * SCORING_CHUNK // len(PROMPTS) + 1, seed=3)
    assert len(samples) > SCORING_CHUNK and len({len(s.token_ids) for s in samples}) > 3
    prompts, ids = [s.prompt for s in samples], [s.token_ids for s in samples]

    together = backend.seq_logprobs(prompts, ids)

    alone = torch.cat([backend.seq_logprobs([p], [i]) for p, i in zip(prompts, ids, strict=True)])
    torch.testing.assert_close(together.detach(), alone.detach(), atol=1e-4, rtol=0)
    weights = torch.arange(len(samples), dtype=torch.float64)
    (weights * together).sum().backward()
    combined = backend.model.tok_emb.weight.grad.clone()
    backend.model.zero_grad()
    (weights * alone).sum().backward()
    torch.testing.assert_close(combined, backend.model.tok_emb.weight.grad, atol=1e-4, rtol=1e-4)


def test_gradients_flow_through_seq_logprobs_into_every_part_of_the_model(encoder):
    backend = make_backend(encoder)
    samples = backend.sample(PROMPTS[:2], 1, seed=1)
    backend.model.train()

    backend.seq_logprobs(PROMPTS[:2], [s.token_ids for s in samples]).sum().backward()

    for name in ("prefix.weight", "tok_emb.weight", "blocks.0.attn.qkv.weight"):
        grad = dict(backend.model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_samples_are_reproducible_framed_and_prompt_major(encoder):
    backend = make_backend(encoder)

    first = backend.sample(PROMPTS[:2], 3, seed=11)
    again = backend.sample(PROMPTS[:2], 3, seed=11)

    assert [s.prompt for s in first] == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert [s.token_ids for s in first] == [s.token_ids for s in again]
    for sample in first:
        assert PAD_ID not in sample.token_ids
        assert (
            sample.token_ids[-1] == EOS_ID
            or sample.token_ids.count(BAR_ID) == 3
            or (len(sample.token_ids) == SIZES["tiny"].block_size - SIZES["tiny"].n_prefix - 1)
        )
        assert len(sample.logprobs) == len(sample.token_ids)
        assert sample.piece.bars <= 2


def test_save_load_and_the_registry_give_the_same_model(encoder, tmp_path):
    backend = make_backend(encoder)
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
    assert loaded.config_description()["model"] == SIZES["tiny"].to_dict()


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
