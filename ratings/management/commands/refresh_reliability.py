"""Store every rater's reliability (gold accuracy, majority agreement, score correlation)."""

from django.core.management.base import BaseCommand

from ratings.quality import reliability_refresh


class Command(BaseCommand):
    help = "Recompute and store per-rater reliability from their votes."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"{reliability_refresh()} raters updated.")
