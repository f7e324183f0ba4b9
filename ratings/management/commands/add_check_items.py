"""Add gold and qualification items to a campaign (see ratings.check_items)."""

from django.core.management.base import BaseCommand, CommandError

from ratings.check_items import CheckItemError, check_items_create
from ratings.models import Campaign


class Command(BaseCommand):
    help = "Add gold items (music vs noise) and qualification items (which clip is louder)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign", type=int)
        parser.add_argument("--gold", type=int, default=3)
        parser.add_argument("--qualification", type=int, default=0)

    def handle(self, *args, campaign: int, gold: int, qualification: int, **options) -> None:
        if gold < 0 or qualification < 0 or gold + qualification > 200:
            raise CommandError("give between 0 and 200 items in all")
        found = Campaign.objects.filter(pk=campaign).select_related("version_a").first()
        if found is None:
            raise CommandError(f"no campaign {campaign}")
        try:
            pairs = check_items_create(campaign=found, gold=gold, qualification=qualification)
        except CheckItemError as error:
            raise CommandError(str(error)) from error
        for pair in pairs:
            self.stdout.write(f"pair {pair.pk}: {pair.kind}, expected {pair.expected_choice}")
