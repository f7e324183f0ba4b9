"""The closed loop in one command: collect -> votes -> snapshot -> reward models -> RL ->
evaluation by the same simulated raters -> report (see reward/closed_loop.py).

python manage.py musicrl_loop                                    # default taste, small budget
python manage.py musicrl_loop --preference ratings.simulation.tastes.prefers_faster
python manage.py musicrl_loop --budget full --seed 3
python manage.py musicrl_loop --objective R                      # prompt adherence, by choice
python manage.py musicrl_loop --presets R,U,RU                   # MusicRL's table

The loop optimises the raters' taste (MusicRL-U) only when a preference model beats chance on
held-out votes; otherwise it collects more votes, up to the budget's rounds, and then stops
and says why (exit status 3) instead of optimising something the votes do not support.
The last line printed is one JSON object with the evaluation figures (or the reason).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from reward.closed_loop import closed_loop_run, presets_problem
from reward.closed_loop_budgets import BUDGETS
from reward.closed_loop_objective import OBJECTIVES

NOT_SUPPORTED_EXIT_CODE = 3  # the votes supported no taste: no candidate was made


class Command(BaseCommand):
    help = "Run the whole MusicRL cycle with simulated raters through the real HTTP API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--preference",
            default="ratings.simulation.tastes.default_preference",
            help="Dotted path of f(prompt_text, clip_a, clip_b) -> P(A preferred).",
        )
        parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--objective",
            choices=OBJECTIVES,
            default="auto",
            help="auto: the raters' taste where the votes support one; R: prompt adherence.",
        )
        parser.add_argument(
            "--presets",
            help="Comma-separated, e.g. R,U,RU: one RL run per preset (RU is U started from "
            "R's result), each judged against the base and RU against R: MusicRL's table.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            preference = import_string(options["preference"])
        except ImportError as error:
            raise CommandError(f"Cannot import --preference: {error}") from error
        logging.getLogger("httpx").setLevel(logging.WARNING)
        presets = None
        if options["presets"]:
            presets = tuple(p.strip() for p in options["presets"].split(",") if p.strip())
            if problem := presets_problem(presets, options["objective"]):
                raise CommandError(f"--presets: {problem}")
        result = closed_loop_run(
            preference=preference,
            preference_name=options["preference"],
            budget_name=options["budget"],
            seed=options["seed"],
            objective=options["objective"],
            presets=presets,
            say=self.stdout.write,
        )
        if "stopped" in result:
            self.stderr.write(f"stopped: {result['stopped']}")
            self.stdout.write(json.dumps(result, default=str))
            raise SystemExit(NOT_SUPPORTED_EXIT_CODE)
        if presets is None:
            self.stdout.write(json.dumps(result["report"], indent=2, default=str))
        self.stdout.write(json.dumps(result, default=str))
