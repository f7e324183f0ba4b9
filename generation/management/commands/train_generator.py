"""Pretrain the learned generator on the composer's captioned corpus.

python manage.py train_generator --size small --steps 600
python manage.py train_generator --size small --steps 600 --queue     # on the train queue
python manage.py train_generator --resume 7                           # after a crash
python manage.py train_generator --resume 7 --steps 7000   # a finished run, trained longer
python manage.py train_generator --size tiny --steps 50 --set eval_prompts=16
python manage.py train_generator --from planned-small-v2 --steps 1800   # a warm start
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from generation import pretraining
from generation.models import GeneratorVersion, PretrainingRun
from generation.services import SHIPPED_LINEAGE, shipped_version_register

SIZES = ("tiny", "small", "base")  # generation.music.planned.SIZES (torch-free here)


class Command(BaseCommand):
    help = "Pretrain the symbolic transformer and register it as an active generator version."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--size", choices=SIZES, default="small")
        parser.add_argument(
            "--steps", type=int, default=None,
            help="Steps of a new run (default 600); with --resume, train a run up to this many.",
        )  # fmt: skip
        parser.add_argument("--queue", action="store_true", help="Run on a Celery worker.")
        parser.add_argument("--resume", type=int, metavar="RUN_ID", help="Continue a run.")
        parser.add_argument(
            "--from", dest="starts_from", metavar="VERSION",
            help="Start from this version's weights (a warm start); its child is registered.",
        )  # fmt: skip
        parser.add_argument(
            "--export", type=Path, help="Also copy the trained generator to this path."
        )
        parser.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", dest="run_settings",
            help="A pretraining setting, e.g. --set eval_prompts=64 --set seed=1",
        )  # fmt: skip

    def handle(self, *args, size: str, steps: int | None, queue: bool, resume: int | None,
               starts_from: str | None, export: Path | None, run_settings: list[str],
               **options) -> None:  # fmt: skip
        if steps is not None and steps < 1:
            raise CommandError("--steps must be at least 1.")
        if resume is not None and starts_from is not None:
            raise CommandError("--from starts a new run; --resume continues one: pick one.")
        if resume is not None:
            run = PretrainingRun.objects.filter(pk=resume).first()
            if run is None:
                raise CommandError(f"No pretraining run {resume}.")
            if steps is not None and steps != run.steps:
                try:
                    run = pretraining.pretraining_run_extend(run=run, steps=steps)
                except pretraining.PretrainingSettingsError as error:
                    raise CommandError(str(error)) from None
        else:
            steps = 600 if steps is None else steps
            try:
                run = pretraining.pretraining_run_create(
                    size=size,
                    steps=steps,
                    queue=queue,
                    settings=self._settings(run_settings),
                    starts_from=self._version(starts_from) if starts_from else None,
                )
            except pretraining.PretrainingSettingsError as error:
                raise CommandError(str(error)) from None
        if queue:
            self.stdout.write(f"Queued pretraining run {run.pk} on the train queue.")
            return
        version = self._train_with_progress(run)
        self._report(version)
        if export:
            pretraining.generator_export(version=version, destination=export)
            self.stdout.write(f"Exported the generator to {export}")

    @staticmethod
    def _version(name: str) -> GeneratorVersion:
        """A registered version by name; the shipped lineage's are registered on first use."""
        if name in {lineage_name for lineage_name, _ in SHIPPED_LINEAGE}:
            shipped_version_register()
        version = GeneratorVersion.objects.filter(name=name).first()
        if version is None:
            raise CommandError(f"No generator version named {name!r}.")
        return version

    @staticmethod
    def _settings(pairs: list[str]) -> dict[str, float]:
        settings: dict[str, float] = {}
        for pair in pairs:
            key, separator, value = pair.partition("=")
            try:
                number = float(value)
            except ValueError:
                number = None
            if not separator or number is None:
                raise CommandError(f"--set {pair!r}: expected KEY=NUMBER")
            settings[key.strip()] = int(number) if number.is_integer() else number
        return settings

    def _train_with_progress(self, run: PretrainingRun):
        bar = tqdm(total=run.steps, initial=run.step, desc=f"pretraining run {run.pk}",
                   unit="step")  # fmt: skip

        def on_progress(step: int, total: int, entry: dict[str, float]) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", plan=f"{entry['plan_loss']:.3f}")

        try:
            return pretraining.pretraining_run_execute(run_id=run.pk, on_progress=on_progress)
        finally:
            bar.close()

    def _report(self, version) -> None:
        # Fetched again: the run object the service started with predates its progress.
        run = PretrainingRun.objects.get(pk=version.pretraining_run_id)
        self.stdout.write("Loss curve (step, loss of pieces, loss of plans):")
        curve = run.loss_curve
        for step, loss, *plan in curve[:: max(len(curve) // 10, 1)] + curve[-1:]:
            plan_loss = f"  {plan[0]:.4f}" if plan else ""
            self.stdout.write(f"  {step:>6}  {loss:.4f}{plan_loss}")
        self.stdout.write("Held-out evaluation:")
        self.stdout.write(json.dumps(version.metrics.get("eval", {}), indent=2))
        self.stdout.write(self.style.SUCCESS(f"Registered active generator version {version}"))
