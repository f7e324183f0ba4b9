"""Simulated raters: synthetic accounts that drive the real rating API over HTTP.

Their judgement is an oracle, not a blind human: a taste turns what each clip plays into
P(the clip shown as A is preferred), and noise and careless raters make the votes realistic.

- `tastes`: what a simulated rater hears in a clip, and the tastes (preference functions);
- `raters`: the raters' accounts and judging profiles, and how one answers each protocol;
- `swarm`: the raters leasing, listening and voting through the API, concurrently.
- `local_server`: the platform's API on a local port, for a run with no web server.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# The names `ratings.simulation` held when it was one module, so tastes written against it
# (and --preference paths such as ratings.simulation.prefers_faster) keep working. The tastes
# are pure and imported here; the raters' and the swarm's names need Django, so they are
# imported on first use and a pure caller of the tastes never loads Django.
from ratings.simulation.tastes import (  # noqa: F401 (re-exported)
    LEAD_PITCH_LIKING,
    MATCH_WEIGHTS,
    PREFERENCE_SHARPNESS,
    TEMPO_TOLERANCE_BPM,
    SimulatedClip,
    attribute_match,
    clip_match,
    default_preference,
    heard,
    heard_attributes,
    prefers_darker,
    prefers_faster,
    prefers_fewer_instruments,
    prefers_higher_register,
    prefers_slower,
    prefers_staccato,
    prompt_adherence,
    prompt_attributes,
    sigmoid,
)

_LAZY = {
    "raters": (
        "CARELESS_CHOICES", "MOS_NOISE_SCALE", "TIE_BAND", "SimulatedAccount", "SimulatedRater",
        "rater_judgement", "simulated_raters_build", "simulated_raters_ensure",
    ),
    "swarm": (
        "MAX_FAILURES_PER_RATER", "NEXT_PATH", "VOTES_PATH", "RaterSwarm", "SimulationConfig",
        "SimulationReport", "public_id_from_clip_url",
    ),
}  # fmt: skip


def __getattr__(name: str) -> Any:
    for module, names in _LAZY.items():
        if name in names:
            return getattr(import_module(f"ratings.simulation.{module}"), name)
    raise AttributeError(f"module 'ratings.simulation' has no attribute {name!r}")
