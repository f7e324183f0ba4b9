"""The closed loop in one command: collect -> votes -> snapshot -> reward models -> RL ->
evaluation by the same simulated raters -> report (see reward/closed_loop.py).

python manage.py musicrl_loop                                    # default taste, small budget
python manage.py musicrl_loop --preference ratings.simulation.prefers_faster
python manage.py musicrl_loop --budget full --seed 3

The last line printed is one JSON object with the evaluation figures.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.module_loading import import_string

from reward.closed_loop import BUDGETS, closed_loop_run


class Command(BaseCommand):
    help = "Run the whole MusicRL cycle with simulated raters through the real HTTP API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--preference",
            default="ratings.simulation.default_preference",
            help="Dotted path of f(prompt_text, clip_a, clip_b) -> P(A preferred).",
        )
        parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            preference = import_string(options["preference"])
        except ImportError as error:
            raise CommandError(f"Cannot import --preference: {error}") from error
        logging.getLogger("httpx").setLevel(logging.WARNING)
        result = closed_loop_run(
            preference=preference,
            preference_name=options["preference"],
            budget_name=options["budget"],
            seed=options["seed"],
            say=self.stdout.write,
        )
        report = result["report"]
        self.stdout.write(json.dumps(report, indent=2, default=str))
        self.stdout.write(json.dumps(result, default=str))
