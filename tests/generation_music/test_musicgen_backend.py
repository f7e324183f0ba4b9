"""MusicGen backend on a tiny randomly initialised model: built in code, offline.

The model has the real architecture (T5 text encoder, EnCodec codec, MusicGen
decoder with the delay pattern) at toy sizes; the tokenizer is a word-level
`tokenizers` vocabulary built here, so no file or hub is touched.
"""

import socket
import subprocess
import sys

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402

from generation.music import render  # noqa: E402
from generation.music.backends import available_backends, get_backend  # noqa: E402
from generation.music.musicgen import MusicGenBackend, SamplingConfig  # noqa: E402

PROMPTS = ["slow sad piano ballad", "fast techno with drums"]
WORDS = ["<pad>", "</s>", "<unk>", *sorted({word for p in PROMPTS for word in p.split()})]
CODEBOOKS, CODEBOOK_SIZE = 2, 32
FRAME_RATE = 50  # 16 kHz / hop 320, the same frame rate as the real 32 kHz / 640 codec
OPUS_FRAME = 960  # 20 ms at 48 kHz


def tiny_config(audio_channels: int = 1) -> "transformers.MusicgenConfig":
    text = transformers.T5Config(
        vocab_size=len(WORDS), d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    # text width 24 != decoder 16: the trainable text->decoder projection exists, as in real models
    audio = transformers.EncodecConfig(
        sampling_rate=16000, audio_channels=1, num_filters=4, upsampling_ratios=[8, 5, 4, 2],
        hidden_size=16, codebook_size=CODEBOOK_SIZE, num_lstm_layers=1, num_residual_layers=1,
        target_bandwidths=[CODEBOOKS * FRAME_RATE * 5 / 1000],  # 5 bits per code -> 2 codebooks
    )  # fmt: skip
    decoder = transformers.MusicgenDecoderConfig(
        vocab_size=CODEBOOK_SIZE, num_codebooks=CODEBOOKS * audio_channels, hidden_size=16,
        audio_channels=audio_channels, num_hidden_layers=2,
        ffn_dim=32, num_attention_heads=2, max_position_embeddings=512,
        pad_token_id=CODEBOOK_SIZE, bos_token_id=CODEBOOK_SIZE,
    )  # fmt: skip
    return transformers.MusicgenConfig(text_encoder=text, audio_encoder=audio, decoder=decoder)


def tiny_tokenizer() -> "transformers.PreTrainedTokenizerFast":
    vocab = {word: index for index, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="</s>"
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Toy-sized ops are dominated by thread hand-off: one thread is ~5x faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backend() -> MusicGenBackend:
    return MusicGenBackend.from_config(tiny_config(), tiny_tokenizer(), SamplingConfig(top_k=8))


@pytest.fixture(scope="module")
def samples(backend):
    return backend.sample(PROMPTS, 2, seed=7, duration_seconds=1.0)


def _rescore(backend, samples):
    logprobs, mask = backend.token_logprobs(
        [sample.prompt for sample in samples], [sample.token_ids for sample in samples]
    )
    assert bool(mask.all()) and mask.shape == logprobs.shape
    return logprobs


def test_sample_returns_codes_logprobs_and_audio_per_prompt(samples):
    assert [sample.prompt for sample in samples] == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    for sample in samples:
        assert sample.token_ids.shape == (CODEBOOKS, FRAME_RATE)
        assert int(sample.token_ids.min()) >= 0 and int(sample.token_ids.max()) < CODEBOOK_SIZE
        assert sample.logprobs.shape == sample.token_ids.shape
        assert bool((sample.logprobs <= 0).all()) and bool(sample.logprobs.isfinite().all())
        assert render.decode_audio(sample.clip.audio_bytes)[1] == 48000
    assert not torch.equal(samples[0].token_ids, samples[1].token_ids)


def test_same_seed_gives_the_same_codes_and_render_is_optional(backend, samples):
    again = backend.sample(PROMPTS, 2, seed=7, duration_seconds=1.0, render=False)
    for first, second in zip(samples, again, strict=True):
        assert torch.equal(first.token_ids, second.token_ids)
        assert first.logprob == second.logprob and second.clip is None


def test_rescored_logprobs_match_sampling_time_logprobs(backend, samples):
    recorded = torch.stack([sample.logprobs for sample in samples])
    totals = backend.seq_logprobs(
        [sample.prompt for sample in samples], [sample.token_ids for sample in samples]
    )

    torch.testing.assert_close(_rescore(backend, samples), recorded, atol=1e-4, rtol=0)
    torch.testing.assert_close(totals, recorded.sum(dim=(1, 2)), atol=1e-4, rtol=0)


def test_gradients_flow_to_the_decoder_not_the_frozen_encoders(backend, samples):
    model = backend.model
    model.zero_grad(set_to_none=True)
    totals = backend.seq_logprobs([s.prompt for s in samples], [s.token_ids for s in samples])
    totals.sum().backward()
    try:
        decoder_grads = [p.grad for p in model.decoder.parameters()]
        assert all(grad is not None for grad in decoder_grads)
        assert sum(float(grad.abs().sum()) for grad in decoder_grads) > 0
        assert model.enc_to_dec_proj.weight.grad is not None
        frozen = [*model.text_encoder.parameters(), *model.audio_encoder.parameters()]
        assert all(p.grad is None for p in frozen)
    finally:
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("audio_channels", [1, 2])
def test_sampling_loop_follows_the_delay_pattern_of_transformers_generate(audio_channels):
    """Greedy decoding (top_k=1) through our loop equals transformers' own generate,
    for mono and for stereo (interleaved left/right codebooks sharing a delay)."""
    greedy = MusicGenBackend.from_config(
        tiny_config(audio_channels), tiny_tokenizer(), SamplingConfig(top_k=1)
    )
    codes, _ = greedy._sample_codes(PROMPTS, FRAME_RATE, torch.Generator().manual_seed(0))
    tokens = greedy.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    reference = greedy.model.generate(
        **tokens, do_sample=False, guidance_scale=3.0, max_new_tokens=FRAME_RATE + CODEBOOKS - 1
    )

    assert reference.shape == (len(PROMPTS), audio_channels, FRAME_RATE * 320)
    np.testing.assert_allclose(greedy._decode_audio(codes), reference.transpose(1, 2).numpy())


def test_generate_returns_a_decodable_ogg_clip_of_the_requested_duration(backend):
    clip = backend.generate("fast techno with drums", seed=3, duration_seconds=2.0)
    audio, sample_rate = render.decode_audio(clip.audio_bytes)

    assert (clip.file_extension, clip.mime_type, clip.sample_rate) == ("ogg", "audio/ogg", 48000)
    assert sample_rate == 48000 and clip.duration_seconds == 2.0
    assert abs(len(audio) - 2 * sample_rate) <= OPUS_FRAME
    assert (clip.caption, clip.attributes, clip.events) == ("fast techno with drums", {}, [])


def test_save_then_load_from_a_local_dir_without_network(backend, samples, tmp_path, monkeypatch):
    backend.save(tmp_path)

    def no_network(*args, **kwargs):
        raise AssertionError("MusicGen loading must not open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    loaded = MusicGenBackend.load(tmp_path)
    monkeypatch.setenv("MUSICGEN_PATH", str(tmp_path))
    registered = get_backend("musicgen")

    assert loaded.sampling == backend.sampling == registered.sampling
    assert loaded.config_description()["parameters"] == backend.config_description()["parameters"]
    for other in (loaded, registered):
        torch.testing.assert_close(_rescore(other, samples), _rescore(backend, samples))


def test_missing_weights_fail_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("MUSICGEN_PATH", raising=False)
    with pytest.raises(ValueError, match="MUSICGEN_PATH"):
        get_backend("musicgen")
    with pytest.raises(FileNotFoundError, match="MUSICGEN_PATH"):
        MusicGenBackend.load(tmp_path / "absent")


def test_backend_registry_is_lazy():
    """Listing backends must not import torch or transformers (web processes)."""
    code = (
        "import sys, generation.music.backends as b; "
        "assert 'musicgen' in b.available_backends(); "
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert "musicgen" in available_backends()


def test_the_device_comes_from_the_argument_then_the_environment(monkeypatch):
    from generation.music.musicgen import resolve_device

    monkeypatch.setenv("MUSICGEN_DEVICE", "meta")
    assert resolve_device(None).type == "meta"
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.delenv("MUSICGEN_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
