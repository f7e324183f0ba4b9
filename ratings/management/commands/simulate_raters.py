"""Drive the real rating API with simulated raters (see ratings/simulation/).

    python manage.py simulate_raters --campaign 3 --raters 20 --votes 200 \\
        --base-url http://127.0.0.1:8000 --noise 1.0 --careless-fraction 0.1 --seed 7
"""

from __future__ import annotations

import logging
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string
from tqdm import tqdm

from ratings.models import Campaign
from ratings.simulation.raters import simulated_raters_build, simulated_raters_ensure
from ratings.simulation.swarm import RaterSwarm, SimulationConfig
from ratings.simulation.tastes import PreferenceFn


class Command(BaseCommand):
    help = (
        "Create N synthetic raters and let them lease, listen and vote through the HTTP API "
        "until M votes are cast or nothing is left. Exits non-zero if any request got a 5xx."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--campaign", type=int, required=True)
        parser.add_argument("--raters", type=int, required=True)
        parser.add_argument("--votes", type=int, required=True, help="Votes to cast in total.")
        parser.add_argument(
            "--preference",
            default="ratings.simulation.tastes.default_preference",
            help="Dotted path of f(prompt_text, clip_a, clip_b) -> P(A preferred).",
        )
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--noise", type=float, default=1.0, help="Logistic temperature; 0 = deterministic."
        )
        parser.add_argument("--careless-fraction", type=float, default=0.0)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--concurrency", type=int, default=None, help="Default min(N, 16).")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        campaign = self._campaign(options["campaign"])
        self._check_numbers(options)
        # One INFO line per request would bury the progress bar and the summary.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        accounts = simulated_raters_ensure(campaign_id=campaign.pk, count=options["raters"])
        raters = simulated_raters_build(
            accounts=accounts,
            noise=options["noise"],
            careless_fraction=options["careless_fraction"],
            seed=options["seed"],
        )
        config = SimulationConfig(
            campaign_id=campaign.pk,
            votes=options["votes"],
            base_url=options["base_url"],
            preference=self._preference(options["preference"]),
            concurrency=options["concurrency"] or min(options["raters"], 16),
        )
        with tqdm(total=config.votes, unit="vote", disable=options["no_progress"]) as bar:
            report = RaterSwarm(config=config, raters=raters, on_vote=bar.update).run()
        careless = sum(rater.careless for rater in raters)
        self.stdout.write(f"campaign {campaign.pk} ({campaign.protocol}), {careless} careless")
        self.stdout.write(report.summary())
        if report.server_errors:
            raise CommandError(f"{report.server_errors.total()} requests got a server error.")

    def _campaign(self, campaign_id: int) -> Campaign:
        campaign = Campaign.objects.filter(pk=campaign_id).first()
        if campaign is None:
            raise CommandError(f"No campaign with id {campaign_id}.")
        if campaign.status != Campaign.Status.ACTIVE:
            raise CommandError(f"Campaign {campaign_id} is {campaign.status}, not active.")
        return campaign

    def _check_numbers(self, options: dict[str, Any]) -> None:
        if options["raters"] < 1 or options["votes"] < 0:
            raise CommandError("--raters must be at least 1 and --votes at least 0.")
        if options["noise"] < 0 or not 0 <= options["careless_fraction"] <= 1:
            raise CommandError("--noise must be >= 0 and --careless-fraction within 0..1.")
        if options["concurrency"] is not None and options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1.")

    def _preference(self, dotted_path: str) -> PreferenceFn:
        try:
            preference = import_string(dotted_path)
        except ImportError as exc:
            raise CommandError(f"Cannot import --preference {dotted_path!r}: {exc}") from exc
        if not callable(preference):
            raise CommandError(f"--preference {dotted_path!r} is not callable.")
        return preference
