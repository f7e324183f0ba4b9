"""What the body has played of its plan's melody so far, as small integer features.

A plan declares the lead melody's density (onsets per bar) and register (the band of its
median pitch). Attention can count onsets and weigh pitches, but a 2M-parameter body learns
to do so only roughly: trained longer on the same data, it kept missing the declared onsets
per bar by one in a third of its pieces and the register band in a quarter. These features
hand it the running tallies instead, so its job becomes local (play a note if the bar still
owes one; go up if the melody so far sits low):

- phrase: the bar's place in its four-bar phrase (phrase endings breathe: half the onsets);
- onsets_owed: the melody onsets this bar still owes its plan (`composer.lead_onsets_per_bar`
  of the declared density and tempo, halved on a phrase's last bar, minus the bar's melody
  onsets so far);
- below_band, above_band: melody notes so far below the declared register band, minus
  the others; and above it, minus the others. The melody's median lies in the band when both
  are negative (and may at 0: an even count's median is the mean of two), so each says
  which way the melody still has to go.

The melody is `composer.melody_notes` read from tokens: the lead's (first declared
program's) notes, above `HANDS_SPLIT` when the declared roster has the lead accompany itself.
Each feature is an index into an embedding, 0 outside the body.

Like the grammar mask (model.py), the features are computed two ways that must agree:
`sequence_features` for a whole teacher-forced batch (cumulative sums, one pass) and
`MelodyTracker` token by token while sampling. A test holds them equal on composed and
sampled sequences.
"""

from __future__ import annotations

import torch
from torch import nn

from generation.music.composer import (
    HANDS_SPLIT,
    accompanies_itself,
    is_phrase_ending,
    lead_onsets_per_bar,
)
from generation.music.events import TEMPO_BUCKETS
from generation.music.plan import DENSITY_VALUES, REGISTER_STEP
from generation.music.tokenizer import BAR_ID, TOKENS, VOCAB_SIZE, token_kind

PHRASE_BARS = 4
MAX_OWED, MIN_OWED = 12, -3
MAX_BALANCE = 8
# Embedding sizes: index 0 is "not in the body" for each.
FEATURE_SIZES = {
    "phrase": 1 + PHRASE_BARS,
    "onsets_owed": 1 + MAX_OWED - MIN_OWED + 1,
    "below_band": 1 + 2 * MAX_BALANCE + 1,
    "above_band": 1 + 2 * MAX_BALANCE + 1,
}


def _token_tables() -> dict[str, torch.Tensor]:
    """Per-token lookups: each header field's value (-1 for other tokens), the kinds the
    tallies react to, and which programs are polyphonic or bass-capable."""
    tables = {
        f"{name}_of": torch.full((VOCAB_SIZE,), -1, dtype=torch.long)
        for name in ("key", "tempo", "density", "register", "position", "pitch", "program")
    }
    kinds = {name: torch.zeros(VOCAB_SIZE, dtype=torch.bool) for name in ("instrument", "pitch")}
    for index, token in enumerate(TOKENS):
        kind, _, value = token.partition("_")
        if kind == "Key":
            tables["key_of"][index] = int(value)
        elif kind == "Tempo":
            tables["tempo_of"][index] = TEMPO_BUCKETS.index(int(value))
        elif kind == "Density":
            tables["density_of"][index] = DENSITY_VALUES.index(int(value) / 100)
        elif kind == "Register":
            tables["register_of"][index] = int(value)
        elif kind == "Position":
            tables["position_of"][index] = int(value)
        elif kind == "Pitch":
            tables["pitch_of"][index] = int(value)
            kinds["pitch"][index] = True
        elif kind == "Program":
            tables["program_of"][index] = int(value)
        kinds["instrument"][index] = token_kind(token) in ("Program", "Drums")
    owed = torch.tensor(
        [[lead_onsets_per_bar(d, t) for t in TEMPO_BUCKETS] for d in DENSITY_VALUES]
    )
    return {**tables, **{f"is_{k}": v for k, v in kinds.items()}, "onsets_per_bar": owed}


def _self_accompanied_table() -> torch.Tensor:
    """(lead program, other program + 1) -> whether the lead accompanies itself, where other
    0 means the lead is the only program (two or more others never let it)."""
    table = torch.zeros(128, 129, dtype=torch.bool)
    for lead in range(128):
        table[lead, 0] = accompanies_itself(lead, [lead])
        for other in range(128):
            table[lead, other + 1] = accompanies_itself(lead, [lead, other])
    return table


class MelodyFeatures(nn.Module):
    """The lookup tables (buffers, rebuilt on load) and both ways of computing features."""

    def __init__(self) -> None:
        super().__init__()
        for name, table in _token_tables().items():
            self.register_buffer(name, table, persistent=False)
        self.register_buffer("self_accompanied", _self_accompanied_table(), persistent=False)
        halves = torch.tensor([is_phrase_ending(bar, bar + 2) for bar in range(PHRASE_BARS)])
        self.register_buffer("phrase_ends", halves, persistent=False)

    # --- shared pieces -----------------------------------------------------------------

    def _owed(self, header: dict[str, torch.Tensor], bars: torch.Tensor, count: torch.Tensor):
        """Onsets the current bar still owes; bars = Bars read (the plan's closing Bar is 1)."""
        density, tempo = header["density"].clamp(min=0), header["tempo"].clamp(min=0)
        per_bar = self.onsets_per_bar[density, tempo]
        phrase_bar = (bars - 1).clamp(min=0) % PHRASE_BARS
        per_bar = torch.where(self.phrase_ends[phrase_bar], (per_bar // 2).clamp(min=1), per_bar)
        return per_bar - count

    def _indices(
        self,
        in_body: torch.Tensor,
        bars: torch.Tensor,
        owed: torch.Tensor,
        below: torch.Tensor,
        above: torch.Tensor,
    ) -> torch.Tensor:
        phrase = (bars - 1).clamp(min=0) % PHRASE_BARS + 1
        owed = owed.clamp(MIN_OWED, MAX_OWED) - MIN_OWED + 1
        below, above = (
            balance.clamp(-MAX_BALANCE, MAX_BALANCE) + MAX_BALANCE + 1 for balance in (below, above)
        )
        return torch.stack([phrase, owed, below, above], -1) * in_body[..., None]

    def _sides(self, header: dict[str, torch.Tensor], token: torch.Tensor):
        """Whether a pitch token lies below, and above, the declared register band."""
        pitch = self.pitch_of[token]
        return pitch < header["register"], pitch >= header["register"] + REGISTER_STEP

    def _is_melody(
        self, header: dict[str, torch.Tensor], instrument: torch.Tensor, token: torch.Tensor
    ) -> torch.Tensor:
        """Whether `token` is a Pitch of the melody, `instrument` being the token naming the
        instrument it sounds on. Header fields broadcast against the token's shape."""
        lead = header["lead"]
        absolute = self.pitch_of[token] + header["key"].clamp(min=0)
        alone = header["alone"]
        return (
            self.is_pitch[token]
            & (lead >= 0)
            & (instrument == lead)
            & (~alone | (absolute > HANDS_SPLIT))
        )

    def _alone(self, lead: torch.Tensor, programs: torch.Tensor, other: torch.Tensor):
        """Whether the lead accompanies itself, from the declared roster."""
        lead_program = self.program_of[lead.clamp(min=0)].clamp(min=0)
        other_program = torch.where(programs == 2, self.program_of[other.clamp(min=0)] + 1, 0)
        return (programs <= 2) & (lead >= 0) & self.self_accompanied[lead_program, other_program]

    # --- a whole batch ---------------------------------------------------------------

    def sequence_features(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T, 4) feature indices after each token of idx (BOS first)."""
        batch, steps = idx.shape
        arange = torch.arange(steps, device=idx.device).expand(batch, steps)
        bar_count = (idx == BAR_ID).cumsum(1)
        in_body = bar_count > 0
        in_header = ~in_body
        header = {
            name: torch.where(in_header, getattr(self, f"{name}_of")[idx], -1).amax(1, True)
            for name in ("key", "tempo", "density", "register")
        }
        header_program = in_header & (self.program_of[idx] >= 0)
        programs = header_program.sum(1)
        first = torch.where(header_program, arange, steps).min(1).values.clamp(max=steps - 1)
        last = torch.where(header_program, arange, -1).max(1).values.clamp(min=0)
        lead = torch.where(programs > 0, idx.gather(1, first[:, None])[:, 0], -1)
        other = idx.gather(1, last[:, None])[:, 0]
        header["lead"] = lead[:, None]
        header["alone"] = self._alone(lead, programs, other)[:, None]

        instrument_at = torch.where(self.is_instrument[idx] & in_body, arange, -1).cummax(1)
        instrument = torch.where(
            instrument_at.values >= 0, idx.gather(1, instrument_at.values.clamp(min=0)), -1
        )
        melody = self._is_melody(header, instrument, idx) & in_body
        # A melody onset: the first melody note at its Position (a segment starts at each
        # Position or Bar).
        starts = (self.position_of[idx] >= 0) | (idx == BAR_ID)
        segment_start = torch.where(starts, arange, 0).cummax(1).values
        melody_sum = melody.long().cumsum(1)
        in_segment = melody_sum - melody_sum.gather(1, segment_start)
        onset = melody & (in_segment == 1)
        onset_sum = onset.long().cumsum(1)
        bar_start = torch.where(idx == BAR_ID, arange, 0).cummax(1).values
        count = onset_sum - onset_sum.gather(1, bar_start)
        owed = self._owed(header, bar_count, count)
        below, above = (
            (melody & side).long().cumsum(1) - (melody & ~side).long().cumsum(1)
            for side in self._sides(header, idx)
        )
        return self._indices(in_body, bar_count, owed, below, above)


class MelodyTracker:
    """`MelodyFeatures.sequence_features`, token by token, for a batch being sampled."""

    def __init__(self, features: MelodyFeatures, batch: int) -> None:
        self.features = features
        zeros = torch.zeros(batch, dtype=torch.long)
        self.header = {name: zeros - 1 for name in ("key", "tempo", "density", "register")}
        self.lead, self.other, self.programs = zeros - 1, zeros - 1, zeros.clone()
        self.bars, self.instrument = zeros.clone(), zeros - 1
        self.count, self.below, self.above = zeros.clone(), zeros.clone(), zeros.clone()
        self.onset_open = torch.zeros(batch, dtype=torch.bool)  # this Position has a melody note

    def keep(self, rows: torch.Tensor) -> None:
        """Only `rows` go on (sampling dropped the rows that ended): every per-row state
        below, cut to them."""
        self.header = {name: value[rows] for name, value in self.header.items()}
        for name in ("lead", "other", "programs", "bars", "instrument", "count", "below",
                     "above", "onset_open"):  # fmt: skip
            setattr(self, name, getattr(self, name)[rows])

    def advance(self, token: torch.Tensor) -> torch.Tensor:
        """(B, 4) feature indices after reading one more token per row."""
        features = self.features
        in_header = self.bars == 0
        self.bars = self.bars + (token == BAR_ID)
        in_body = self.bars > 0
        for name in self.header:
            value = getattr(features, f"{name}_of")[token]
            self.header[name] = torch.where(in_header & (value >= 0), value, self.header[name])
        program = in_header & (token != BAR_ID) & (features.program_of[token] >= 0)
        self.lead = torch.where(program & (self.lead < 0), token, self.lead)
        self.other = torch.where(program, token, self.other)
        self.programs = self.programs + program
        header = {
            **self.header,
            "lead": self.lead,
            "alone": features._alone(self.lead, self.programs, self.other),
        }
        self.instrument = torch.where(
            features.is_instrument[token] & in_body, token, self.instrument
        )
        melody = features._is_melody(header, self.instrument, token) & in_body
        starts = (features.position_of[token] >= 0) | (token == BAR_ID)
        onset = melody & ~(self.onset_open & ~starts)
        self.onset_open = torch.where(starts, False, self.onset_open | melody)
        self.count = torch.where(token == BAR_ID, 0, self.count + onset)
        below, above = features._sides(header, token)
        self.below = self.below + (melody & below).long() - (melody & ~below).long()
        self.above = self.above + (melody & above).long() - (melody & ~above).long()
        owed = features._owed(header, self.bars, self.count)
        return features._indices(in_body, self.bars, owed, self.below, self.above)
