"""The networks every reward model is built from: an audio encoder over log-mel frames and a
reward head that reads the clip together with the prompt's text embedding."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    n_mels: int = 64
    channels: int = 96
    blocks: int = 4  # each halves the frame rate: 50 fps in, ~3 fps at the pooling
    kernel_size: int = 5
    embed_dim: int = 128
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(batch, 1, frames) bool: True on a clip's real frames."""
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None])[:, None, :]


def masked_group_norm(norm: nn.GroupNorm, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """GroupNorm(1, C) with its statistics over the valid frames only (x is zero elsewhere)."""
    count = valid.sum(dim=(1, 2), keepdim=True).to(x.dtype) * x.shape[1]
    mean = x.sum(dim=(1, 2), keepdim=True) / count
    variance = (((x - mean) * valid).square()).sum(dim=(1, 2), keepdim=True) / count
    normed = (x - mean) * torch.rsqrt(variance + norm.eps)
    return normed * norm.weight[None, :, None] + norm.bias[None, :, None]


class ConvBlock(nn.Module):
    """Residual strided 1-D convolution over time, with a per-clip channel norm."""

    def __init__(self, channels: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, stride=2, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(1, channels)
        self.mix = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """`lengths` are the real frames of each clip in the output (after the stride); without
        them every frame is real. Padding is kept at zero and left out of the norm's
        statistics, so that a clip's output does not depend on how far it was padded."""
        down = self.conv(x)
        if lengths is None:
            hidden = self.mix(self.dropout(F.gelu(self.norm(down))))
            return down + hidden
        valid = frame_mask(lengths, down.shape[2])
        down = down * valid
        hidden = self.mix(self.dropout(F.gelu(masked_group_norm(self.norm, down, valid))))
        return (down + hidden) * valid


def downsampled_lengths(lengths: torch.Tensor, blocks: int) -> torch.Tensor:
    for _ in range(blocks):
        lengths = torch.div(lengths + 1, 2, rounding_mode="floor")  # stride 2, "same" padding
    return lengths.clamp_min(1)


class AudioEncoder(nn.Module):
    """(batch, n_mels, frames) log-mel -> (batch, embed_dim). Mean and max pooling over time.
    With `lengths`, padding is masked at every layer (zeroed, as the convolutions' own padding
    is, and left out of the norms and the pooling), so a clip padded to a batch's longest one
    gets the output it gets alone."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = nn.Conv1d(config.n_mels, config.channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            ConvBlock(config.channels, config.kernel_size, config.dropout)
            for _ in range(config.blocks)
        )
        self.out = nn.Linear(2 * config.channels, config.embed_dim)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None:
            x = F.gelu(self.stem(mel))
            for block in self.blocks:
                x = block(x)
            return self.out(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))
        lengths = lengths.to(mel.device).clamp(1, mel.shape[2])
        valid = frame_mask(lengths, mel.shape[2])
        x = F.gelu(self.stem(mel * valid)) * valid
        for block in self.blocks:
            lengths = downsampled_lengths(lengths, 1)
            x = block(x, lengths)
        valid = frame_mask(lengths, x.shape[2])
        mean = x.sum(dim=2) / lengths[:, None].to(x.dtype)
        peak = x.masked_fill(~valid, float("-inf")).amax(dim=2)
        return self.out(torch.cat([mean, peak], dim=1))


@dataclass(frozen=True)
class RewardNetConfig:
    encoder: EncoderConfig = EncoderConfig()
    text_dim: int = 384  # all-MiniLM-L6-v2
    hidden: int = 128
    dropout: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardNetConfig:
        data = dict(data)
        return cls(encoder=EncoderConfig(**data.pop("encoder")), **data)


class RewardNet(nn.Module):
    """r(clip, prompt) -> one scalar per clip. The product term lets the reward depend on how
    the clip fits the prompt, not only on the clip; the prompt alone cannot change a pairwise
    comparison, which is why the Bradley-Terry loss never sees the text on its own."""

    def __init__(self, config: RewardNetConfig) -> None:
        super().__init__()
        self.config = config
        self.audio = AudioEncoder(config.encoder)
        dim = config.encoder.embed_dim
        self.text = nn.Linear(config.text_dim, dim)
        # Sentence embeddings are unit vectors, so a fresh Linear maps them to features (std
        # ~0.04) several times smaller than the audio's, and the product term barely moves:
        # on synthetic data where the better clip depends on the prompt, the model stalled
        # at a prompt-blind ranking. Normalising the projection lets the prompt count at once.
        self.text_norm = nn.LayerNorm(dim)
        self.head = nn.Sequential(
            nn.Linear(3 * dim, config.hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, 1),
        )

    def forward(
        self, mel: torch.Tensor, text_emb: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        audio = self.audio(mel, lengths)
        text = self.text_norm(self.text(text_emb))
        return self.head(torch.cat([audio, text, audio * text], dim=1)).squeeze(1)
