"""Train a reward model from the stored votes and ratings.

python manage.py train_reward_model --kind preference --name pref-v1 --steps 400
python manage.py train_reward_model --kind quality --campaign 3 --campaign 4 --queue
python manage.py train_reward_model --kind adherence --method attribute_match --name exact
python manage.py train_reward_model --resume 7        # continue a job after a crash
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from ratings.dataset import DataFilters
from reward import training
from reward.models import RewardModel


def _aware(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


class Command(BaseCommand):
    help = "Train a preference, quality or adherence reward model (here or on a worker)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", choices=RewardModel.Kind.values)
        parser.add_argument("--method", choices=RewardModel.Method.values, default="learned")
        parser.add_argument("--name", help="Default: <kind>-<timestamp>.")
        parser.add_argument("--steps", type=int, default=400)
        parser.add_argument("--campaign", type=int, action="append", default=[], metavar="ID")
        parser.add_argument("--protocol", action="append", default=[])
        parser.add_argument("--since", type=_aware, help="ISO date or datetime.")
        parser.add_argument("--until", type=_aware, help="ISO date or datetime (exclusive).")
        parser.add_argument("--min-reliability", type=float, metavar="FRACTION")
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE",
            help="A run setting, e.g. --set learning_rate=0.0005 --set test_share=0.25",
        )  # fmt: skip
        parser.add_argument("--queue", action="store_true", help="Run on a Celery worker.")
        parser.add_argument("--resume", type=int, metavar="ID", help="Continue a stopped job.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["resume"] is not None:
            reward_model = RewardModel.objects.filter(pk=options["resume"]).first()
            if reward_model is None:
                raise CommandError(f"No reward model {options['resume']}.")
            RewardModel.objects.filter(
                pk=reward_model.pk, status__in=["failed", "cancelled"]
            ).update(status="queued", cancel_requested=False, error="")
        else:
            reward_model = self._create(options)
        if options["queue"]:
            self.stdout.write(f"Queued reward model {reward_model.pk} on the train queue.")
            return
        finished = self._train_with_progress(reward_model)
        if finished is None:
            raise CommandError(f"Reward model {reward_model.pk} is running or over already.")
        self.stdout.write(json.dumps(finished.metrics, indent=2))
        if finished.status != RewardModel.Status.FINISHED:
            raise CommandError(f"Reward model {finished.pk} ended {finished.status}.")
        self.stdout.write(self.style.SUCCESS(f"Reward model {finished} is ready."))

    def _create(self, options: dict[str, Any]) -> RewardModel:
        if not options["kind"]:
            raise CommandError("--kind is required (or --resume ID).")
        kind = options["kind"]
        filters = DataFilters(
            campaign_ids=tuple(options["campaign"]),
            protocols=tuple(options["protocol"]),
            since=options["since"],
            until=options["until"],
            min_rater_reliability=options["min_reliability"],
        )
        try:
            return training.reward_model_create(
                name=options["name"] or f"{kind}-{timezone.now():%Y%m%d-%H%M%S}",
                kind=kind,
                method=options["method"],
                steps=options["steps"],
                filters=filters,
                settings=self._settings(options["set"]),
                queue=options["queue"],
            )
        except training.RewardModelError as error:
            raise CommandError(str(error)) from error

    def _settings(self, pairs: list[str]) -> dict[str, float]:
        settings = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            try:
                number = float(value)
            except ValueError:
                raise CommandError(f"--set {pair!r}: the value must be a number") from None
            settings[key.strip()] = int(number) if number.is_integer() else number
        return settings

    def _train_with_progress(self, reward_model: RewardModel) -> RewardModel | None:
        bar = tqdm(total=reward_model.steps, initial=reward_model.step, unit="step",
                   desc=f"reward model {reward_model.pk} ({reward_model.kind})")  # fmt: skip

        def on_progress(step: int, total: int, entry: dict[str, float]) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")

        try:
            return training.reward_model_execute(
                reward_model_id=reward_model.pk, on_progress=on_progress
            )
        finally:
            bar.close()
