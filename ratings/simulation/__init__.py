"""Simulated raters: synthetic accounts that drive the real rating API over HTTP.

Their judgement is an oracle, not a blind human: a taste turns what each clip plays into
P(the clip shown as A is preferred), and noise and careless raters make the votes realistic.

- `tastes`: what a simulated rater hears in a clip, and the tastes (preference functions);
- `raters`: the raters' accounts and judging profiles, and how one answers each protocol;
- `swarm`: the raters leasing, listening and voting through the API, concurrently.
- `local_server`: the platform's API on a local port, for a run with no web server.
"""
