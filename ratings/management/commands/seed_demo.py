"""Seed a demo: generator versions (the composer and, when shipped, the learned model), three
campaigns (one per protocol) and three users.

Safe to run on every start: existing rows are kept, and the demo passwords are stored in the
data directory so the same credentials are printed each time.
"""

import json
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from generation.models import GeneratorVersion
from generation.music.backends import SHIPPED_GENERATOR
from generation.music.prompts import EXAMPLE_PROMPTS
from generation.services import generator_version_register, shipped_version_register
from ratings.campaigns import campaign_create
from ratings.models import Campaign, Rater, Role

DEMO_PROMPTS = EXAMPLE_PROMPTS[:6]

DEMO_INSTRUCTIONS = (
    "Listen to both clips (press A and B, or click Play). When the vote buttons unlock, "
    "choose the clip you prefer as music for the prompt shown above the clips, or say "
    "they are about the same, or that both are bad."
)


class Command(BaseCommand):
    help = "Create demo users, generator versions and campaigns (idempotent)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--clip-seconds", type=float, default=10.0)

    def handle(self, *args, clip_seconds: float, **options) -> None:
        credentials = self._users()
        with transaction.atomic():
            v1 = generator_version_register(
                name="procedural-v1", backend="procedural", status=GeneratorVersion.Status.ACTIVE
            )
            v2 = generator_version_register(
                name="procedural-v2",
                backend="procedural",
                config={"humanize": 0.6, "variation": 0.8},
                parent=v1,
            )
            learned = self._shipped_learned_version()
        admin = get_user_model().objects.get(username="admin")
        self._campaigns(learned or v1, v2 if learned is None else v1, admin, clip_seconds)
        for username, password in credentials.items():
            self.stdout.write(f"  {username:<11} password: {password}")

    def _shipped_learned_version(self) -> GeneratorVersion | None:
        """The learned generator shipped in the repository (and its parent), registered once;
        None if the checkpoint file is absent (the composer then stands in)."""
        version = shipped_version_register()
        if version is None:
            self.stderr.write(f"No {SHIPPED_GENERATOR}; the demo uses the composer only.")
        return version

    def _users(self) -> dict[str, str]:
        store = Path(settings.DATA_DIR) / "demo-credentials.json"
        saved = json.loads(store.read_text()) if store.exists() else {}
        User = get_user_model()
        for username, role in (
            ("admin", Role.ADMIN),
            ("researcher", Role.RESEARCHER),
            ("rater", Role.RATER),
        ):
            password = saved.setdefault(username, secrets.token_urlsafe(9))
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = role == Role.ADMIN
                user.save()
            Rater.objects.get_or_create(user=user, defaults={"role": role})
        store.write_text(json.dumps(saved, indent=2))
        store.chmod(0o600)
        return saved

    def _campaigns(self, main, challenger, admin, clip_seconds: float) -> None:
        """Collection and MOS use the main version; the evaluation pits the challenger
        against it (the composer against the learned model when one is shipped)."""
        specs = [
            (
                "Demo: which clip do you prefer?",
                Campaign.Purpose.COLLECT,
                Campaign.Protocol.PREFERENCE,
                main,
                None,
                DEMO_PROMPTS,
            ),
            (
                f"Demo: {challenger.name} against {main.name}, side by side",
                Campaign.Purpose.EVALUATE,
                Campaign.Protocol.SIDE_BY_SIDE,
                main,
                challenger,
                DEMO_PROMPTS[:4],
            ),
            (
                "Demo: audio quality (MOS)",
                Campaign.Purpose.COLLECT,
                Campaign.Protocol.MOS,
                main,
                None,
                DEMO_PROMPTS[:3],
            ),
        ]
        for name, purpose, protocol, version_a, version_b, prompts in specs:
            if Campaign.objects.filter(name=name).exists():
                continue
            campaign_create(
                name=name,
                purpose=purpose,
                protocol=protocol,
                prompt_texts=prompts,
                version_a=version_a,
                version_b=version_b,
                clip_seconds=clip_seconds,
                instructions=DEMO_INSTRUCTIONS if protocol == Campaign.Protocol.PREFERENCE else "",
                created_by=admin,
            )
            self.stdout.write(f"Queued clip generation for campaign {name!r}")
