"""Fine-tune a learned generator version with RLOO (reward models) or DPO (stored pairs).

python manage.py finetune --base planned-small-v3 --preset U --steps 50
python manage.py finetune --base planned-small-v3 --preset RU --steps 30 --set beta=0.1
python manage.py finetune --base planned-small-v3 --reward 3=1.0 --reward 5=0.5 --steps 40
python manage.py finetune --base planned-small-v3 --algorithm dpo --campaign 2 --steps 60
python manage.py finetune --resume 4                     # continue a run after a crash
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from generation.models import GeneratorVersion
from ratings.dataset import DataFilters
from reward import finetune
from reward.models import FineTuneRun


def _number(text: str) -> float | int:
    number = float(text)
    return int(number) if number.is_integer() else number


class Command(BaseCommand):
    help = "Fine-tune a learned generator version; registers a candidate version at the end."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base", help="Name of the base generator version.")
        parser.add_argument("--algorithm", choices=FineTuneRun.Algorithm.values, default="rloo")
        parser.add_argument("--preset", choices=FineTuneRun.Preset.values, default="U")
        parser.add_argument(
            "--reward", action="append", default=[], metavar="ID=WEIGHT",
            help="A custom reward mix (implies --preset custom).",
        )  # fmt: skip
        parser.add_argument("--steps", type=int, default=50, help="Steps per stage.")
        parser.add_argument("--name", help="Default: <base>-<algorithm>-<timestamp>.")
        parser.add_argument("--campaign", type=int, action="append", default=[], metavar="ID")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--queue", action="store_true", help="Run on a Celery worker.")
        parser.add_argument("--resume", type=int, metavar="RUN_ID")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["resume"] is not None:
            run = FineTuneRun.objects.filter(pk=options["resume"]).first()
            if run is None:
                raise CommandError(f"No fine-tuning run {options['resume']}.")
            FineTuneRun.objects.filter(pk=run.pk, status__in=["failed", "cancelled"]).update(
                status="queued", cancel_requested=False, error=""
            )
        else:
            run = self._create(options)
        if options["queue"]:
            self.stdout.write(f"Queued fine-tuning run {run.pk} on the train queue.")
            return
        finished = self._run_with_progress(run)
        if finished is None:
            raise CommandError(f"Run {run.pk} is running elsewhere or over already.")
        self.stdout.write(json.dumps(finished.metrics, indent=2, default=str))
        for warning in finished.warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        if finished.status != FineTuneRun.Status.FINISHED:
            raise CommandError(f"Run {finished.pk} ended {finished.status}: {finished.error}")
        self.stdout.write(
            self.style.SUCCESS(f"Registered candidate version {finished.result_version}")
        )

    def _create(self, options: dict[str, Any]) -> FineTuneRun:
        base = GeneratorVersion.objects.filter(name=options["base"] or "").first()
        if base is None:
            raise CommandError(f"No generator version named {options['base']!r} (--base).")
        weights = {}
        for pair in options["reward"]:
            key, _, value = pair.partition("=")
            try:
                weights[int(key)] = float(value)
            except ValueError:
                raise CommandError(f"--reward {pair!r}: expected ID=WEIGHT") from None
        settings = {}
        for pair in options["set"]:
            key, _, value = pair.partition("=")
            try:
                settings[key.strip()] = _number(value)
            except ValueError:
                settings[key.strip()] = value.strip()  # e.g. guard_action=stop
        name = options["name"] or f"{base.name}-{options['algorithm']}-{timezone.now():%H%M%S}"
        try:
            return finetune.finetune_run_create(
                name=name,
                base_version=base,
                algorithm=options["algorithm"],
                preset="custom" if weights else options["preset"],
                steps=options["steps"],
                reward_weights=weights,
                filters=DataFilters(campaign_ids=tuple(options["campaign"])),
                settings=settings,
                queue=options["queue"],
            )
        except finetune.FineTuneError as error:
            raise CommandError(str(error)) from error

    def _run_with_progress(self, run: FineTuneRun) -> FineTuneRun | None:
        bar = tqdm(total=run.steps, initial=run.step, unit="step", desc=f"run {run.pk}")

        def on_progress(step: int, total: int, entry: dict[str, float]) -> None:
            bar.update(step - bar.n)
            shown = {k: f"{v:.3f}" for k, v in entry.items() if k in ("reward_total", "kl")}
            bar.set_postfix(shown)

        try:
            return finetune.finetune_run_execute(run_id=run.pk, on_progress=on_progress)
        finally:
            bar.close()
