"""Pretrain the learned generator on the composer's captioned corpus.

python manage.py train_generator --size small --steps 600
python manage.py train_generator --size small --steps 600 --queue     # on the train queue
python manage.py train_generator --resume 7                           # after a crash
"""

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from generation import training
from generation.models import PretrainingRun

SIZES = ("tiny", "small", "base")


class Command(BaseCommand):
    help = "Pretrain the symbolic transformer and register it as an active generator version."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--size", choices=SIZES, default="small")
        parser.add_argument("--steps", type=int, default=600)
        parser.add_argument("--queue", action="store_true", help="Run on a Celery worker.")
        parser.add_argument("--resume", type=int, metavar="RUN_ID", help="Continue a run.")
        parser.add_argument(
            "--export", type=Path, help="Also copy the trained generator to this path."
        )

    def handle(self, *args, size: str, steps: int, queue: bool, resume: int | None,
               export: Path | None, **options) -> None:  # fmt: skip
        if steps < 1:
            raise CommandError("--steps must be at least 1.")
        if resume is not None:
            run = PretrainingRun.objects.filter(pk=resume).first()
            if run is None:
                raise CommandError(f"No pretraining run {resume}.")
        else:
            run = training.pretraining_run_create(size=size, steps=steps, queue=queue)
        if queue:
            self.stdout.write(f"Queued pretraining run {run.pk} on the train queue.")
            return
        version = self._train_with_progress(run)
        self._report(version)
        if export:
            training.generator_export(version=version, destination=export)
            self.stdout.write(f"Exported the generator to {export}")

    def _train_with_progress(self, run: PretrainingRun):
        bar = tqdm(total=run.steps, initial=run.step, desc=f"pretraining run {run.pk}",
                   unit="step")  # fmt: skip

        def on_progress(step: int, total: int, entry: dict[str, float]) -> None:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{entry['loss']:.3f}")

        try:
            return training.pretraining_run_execute(run_id=run.pk, on_progress=on_progress)
        finally:
            bar.close()

    def _report(self, version) -> None:
        # Fetched again: the run object the service started with predates its progress.
        run = PretrainingRun.objects.get(pk=version.pretraining_run_id)
        self.stdout.write("Loss curve (step, loss):")
        curve = run.loss_curve
        for step, loss in curve[:: max(len(curve) // 10, 1)] + curve[-1:]:
            self.stdout.write(f"  {step:>6}  {loss:.4f}")
        self.stdout.write("Held-out evaluation:")
        self.stdout.write(json.dumps(version.metrics.get("eval", {}), indent=2))
        self.stdout.write(self.style.SUCCESS(f"Registered active generator version {version}"))
