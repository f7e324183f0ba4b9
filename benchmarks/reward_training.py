"""Reward-model training: pairs per second and wall time to train the preference model on
10,000 simulated votes on this CPU, with the held-out accuracy it reaches.

    .venv/bin/python benchmarks/reward_training.py [--votes 10000] [--epochs 2] [--reuse]

1. Creates the PostgreSQL database musicpref_reward_bench (kept with --reuse, so the clips are
   rendered once), migrates it, and renders an evaluate campaign: 500 prompts, each with one
   clip from a sparse and one from a busy procedural version (3 s clips, FluidSynth, Opus).
2. Casts the votes in bulk: 20 simulated raters per pair whose known taste depends on the
   prompt (calm, sad, dark and dreamy prompts should sound sparse, the others busy) and who
   prefer the fitting clip with probability 0.85 (the logistic choice model of simulate_raters,
   noise 1, with its tie band); --taste sparse always prefers the sparse clip. The best any
   model can do on their held-out votes is printed next to the result.
3. Runs the real job in this process (reward_model_execute: rows, log-mel features, prompt
   embeddings, training with checkpoints, bootstrap metrics, scoring every clip) and times each
   phase; the training figure is steps x batch over the training loop's wall time.
4. Baseline, same run: a linear Bradley-Terry model on each clip's mean and spread of log-mel
   bands (no network, no prompt), trained on the same pairs: its pairs/s and held-out accuracy.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
DB_NAME = "musicpref_reward_bench"
P_SPARSE = 0.85
RATERS = 20
TEMPOS = ("", "slow", "fast")
MOODS = ("calm", "sad", "happy", "dark", "energetic", "dreamy", "tense", "playful")
STYLES = ("piano ballad", "techno", "folk song", "rock", "lofi beat", "blues", "pop", "house",
          "reggae")  # fmt: skip
EXTRAS = ("", "with piano", "with guitar")
# The raters' taste depends on the prompt: calm moods should sound sparse, lively ones busy. A
# model that ignores the prompt cannot beat chance on it (the baseline below shows that).
SPARSE_MOODS = {"calm", "sad", "dark", "dreamy"}


def wants_sparse(prompt_text: str, taste: str) -> bool:
    return taste == "sparse" or any(word in SPARSE_MOODS for word in prompt_text.split())


def prompts(count: int) -> list[str]:
    combos = itertools.product(EXTRAS, TEMPOS, MOODS, STYLES)
    texts = [" ".join(filter(None, (t, m, s, e))) for e, t, m, s in combos]
    if count > len(texts):
        raise SystemExit(f"at most {len(texts)} prompts")
    return random.Random(0).sample(texts, count)


def database(reuse: bool) -> tuple[str, bool]:
    """(url, exists already) of the benchmark database."""
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if exists and not reuse:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(DB_NAME)))
            exists = None
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB_NAME)))
    return f"{POSTGRES_URL}/{DB_NAME}", bool(exists)


def django_setup(database_url: str, data_dir: Path) -> None:
    os.environ.update({
        "DATABASE_URL": database_url, "DATA_DIR": str(data_dir),
        "SECRET_KEY": "reward-training-benchmark", "DJANGO_SETTINGS_MODULE": "config.settings",
        "CELERY_BROKER_URL": "filesystem://", "LOG_LEVEL": "WARNING",
    })  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   check=True)  # fmt: skip
    import django

    django.setup()


def render_campaign(prompt_count: int) -> tuple[int, float]:
    """(campaign id, seconds spent rendering); an existing campaign is reused."""
    from generation.services import generator_version_register, prompt_get_or_create
    from ratings.campaigns import campaign_generate_prompt
    from ratings.models import Campaign

    existing = Campaign.objects.filter(name="reward benchmark", status="active").first()
    if existing and existing.pairs.count() == prompt_count:
        return existing.pk, 0.0
    sparse = generator_version_register(
        name="sparse", backend="procedural", config={"density_scale": 0.3}
    )
    busy = generator_version_register(
        name="busy", backend="procedural", config={"density_scale": 3.0}
    )
    campaign = Campaign.objects.create(
        name="reward benchmark", purpose="evaluate", protocol="preference", status="generating",
        version_a=sparse, version_b=busy, votes_per_item=RATERS, min_listen_seconds=0,
        clip_seconds=3.0,
    )  # fmt: skip
    started = time.perf_counter()
    from tqdm import tqdm

    for text in tqdm(prompts(prompt_count), desc="rendering clips (2 per prompt)"):
        prompt = prompt_get_or_create(text=text)
        campaign.prompts.add(prompt)
        campaign_generate_prompt(campaign_id=campaign.pk, prompt_id=prompt.pk)
    return campaign.pk, time.perf_counter() - started


def cast_votes(campaign_id: int, votes: int, taste: str) -> None:
    """Bulk-insert votes by simulated raters with the known taste (replacing earlier ones)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.db.models import F
    from django.utils import timezone

    from ratings.models import Assignment, Pair, Rater, Vote
    from ratings.simulation.raters import SimulatedRater

    pairs = list(Pair.objects.filter(campaign_id=campaign_id).select_related(
        "track_a__generator_version", "prompt").order_by("pk"))  # fmt: skip
    per_pair = votes // len(pairs)
    if per_pair > RATERS:
        raise SystemExit(f"at most {RATERS * len(pairs)} votes with {len(pairs)} pairs")
    with transaction.atomic():
        Vote.objects.filter(campaign_id=campaign_id).delete()
        Assignment.objects.filter(campaign_id=campaign_id).delete()
        Pair.objects.filter(campaign_id=campaign_id).update(vote_count=0, slots_taken=0)
        raters = []
        for index in range(RATERS):
            user, _ = get_user_model().objects.get_or_create(username=f"bench-rater-{index}")
            rater, _ = Rater.objects.get_or_create(user=user)
            raters.append(SimulatedRater(user.username, "", 1.0, False, random.Random(index)))
            raters[-1].row = rater
        now = timezone.now()
        rng = random.Random(1)
        assignments, choices = [], []
        for pair in pairs:
            a_is_sparse = pair.track_a.generator_version.name == "sparse"
            a_is_wanted = a_is_sparse == wants_sparse(pair.prompt.text, taste)
            p_a = P_SPARSE if a_is_wanted else 1 - P_SPARSE
            for rater in raters[:per_pair]:
                left_is_a = rng.random() < 0.5
                shown = rater.choose(p_a if left_is_a else 1 - p_a)  # in screen terms
                choice = "tie" if shown == "tie" else ("a" if (shown == "A") == left_is_a else "b")
                assignments.append(Assignment(
                    pair=pair, rater=rater.row, campaign_id=campaign_id, left_is_a=left_is_a,
                    status="voted", served_at=now, expires_at=now + timezone.timedelta(minutes=5),
                ))  # fmt: skip
                choices.append(choice)
        Assignment.objects.bulk_create(assignments, batch_size=2000)
        Vote.objects.bulk_create([
            Vote(assignment=a, pair_id=a.pair_id, rater_id=a.rater_id, campaign_id=campaign_id,
                 choice=choice, left_is_a=a.left_is_a, listen_ms_a=3000, listen_ms_b=3000,
                 elapsed_ms=7000, idempotency_key=uuid.uuid4())
            for a, choice in zip(assignments, choices, strict=True)
        ], batch_size=2000)  # fmt: skip
        Pair.objects.filter(campaign_id=campaign_id).update(
            vote_count=per_pair, slots_taken=per_pair, votes_wanted=F("votes_wanted")
        )


def best_possible(rows: list[dict], test_share: float, taste: str) -> float:
    from generation.music.prompts import prompt_is_held_out

    hits = [
        (row["choice"] == "a")
        == ((row["version_a"] == "sparse") == wants_sparse(row["prompt_text"], taste))
        for row in rows
        if row["choice"] in ("a", "b")
        and prompt_is_held_out(row["prompt_text"], test_share=test_share, split_seed=0)
    ]
    return sum(hits) / len(hits)


def linear_baseline(reward_model, test_share: float) -> dict:
    """Bradley-Terry with a linear reward on per-band mean and sd of the log-mel: the simplest
    audio model, on the same pairs and split."""
    import torch

    from generation.models import Track
    from ratings.dataset import DataFilters, vote_rows
    from reward.learning.data import PreferenceSet
    from reward.learning.metrics import pairwise_accuracy
    from reward.track_scoring import track_log_mels
    from reward.training_sets import preference_pairs

    rows = list(vote_rows(DataFilters.from_json(reward_model.data_filters)))
    data = preference_pairs(rows, test_share=test_share, split_seed=0)
    tracks = Track.objects.in_bulk(data.track_ids)
    mels = track_log_mels([tracks[i] for i in data.track_ids])
    features = torch.stack([torch.cat([m.mean(dim=1), m.std(dim=1)]) for m in mels])
    features = (features - features.mean(0)) / features.std(0).clamp_min(1e-6)
    train, test = PreferenceSet(**data.train), PreferenceSet(**data.test)
    weights = torch.zeros(features.shape[1], requires_grad=True)
    optimizer = torch.optim.Adam([weights], lr=0.05)
    epochs, batch = 2, 32
    steps = epochs * len(train) // batch
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(len(train), (batch,), generator=gen)
        margin = (features[train.clip_a[index]] - features[train.clip_b[index]]) @ weights
        loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, train.target[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        margins = (features[test.clip_a] - features[test.clip_b]) @ weights
    accuracy = pairwise_accuracy(margins.numpy(), test.target.numpy(), test.group.numpy())
    return {"pairs_per_second": round(steps * batch / seconds, 1),
            "heldout_accuracy": round(accuracy["accuracy"], 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--votes", type=int, default=10_000)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--test-share", type=float, default=0.2)
    parser.add_argument("--reuse", action="store_true", help="Keep the database and clips.")
    parser.add_argument(
        "--taste", choices=("mood", "sparse"), default="mood",
        help="mood: calm moods should sound sparse, lively ones busy; sparse: always sparse.",
    )  # fmt: skip
    args = parser.parse_args()

    url, reused = database(args.reuse)
    data_dir = Path(tempfile.gettempdir()) / "musicpref-reward-bench"
    django_setup(url, data_dir)
    campaign_id, render_seconds = render_campaign(args.prompts)
    cast_votes(campaign_id, args.votes, args.taste)

    from ratings.dataset import DataFilters, vote_rows
    from reward.models import RewardModel
    from reward.training import reward_model_create, reward_model_execute

    rows = list(vote_rows(DataFilters(campaign_ids=(campaign_id,))))
    train_votes = sum(1 for row in rows if row["choice"] != "both_bad") * (1 - args.test_share)
    steps = max(1, round(args.epochs * train_votes / args.batch_size))
    RewardModel.objects.filter(name="benchmark").delete()
    reward_model = reward_model_create(
        name="benchmark", kind="preference", steps=steps, queue=False,
        filters=DataFilters(campaign_ids=(campaign_id,)),
        settings={"batch_size": args.batch_size, "test_share": args.test_share,
                  "eval_every": max(steps // 4, 1), "checkpoint_every": max(steps // 10, 1)},
    )  # fmt: skip
    import shutil

    shutil.rmtree(reward_model.directory, ignore_errors=True)
    step_times: list[float] = []
    started = time.perf_counter()
    reward_model = reward_model_execute(
        reward_model_id=reward_model.pk,
        on_progress=lambda step, total, entry: step_times.append(time.perf_counter()),
    )
    total_seconds = time.perf_counter() - started
    if reward_model.status != "finished":
        raise SystemExit(f"training ended {reward_model.status}: {reward_model.error}")
    training_seconds = step_times[-1] - step_times[0]
    pairs_per_second = (len(step_times) - 1) * args.batch_size / training_seconds
    step_ms = statistics.median(b - a for a, b in itertools.pairwise(step_times)) * 1000
    heldout = reward_model.metrics["heldout"]
    ceiling = reward_model.metrics["noise_ceiling"]["heldout"]
    baseline = linear_baseline(reward_model, args.test_share)
    figures = {
        "votes": len(rows),
        "train_votes": reward_model.metrics["train"]["votes"],
        "heldout_votes": heldout["votes"],
        "steps": steps,
        "batch_size": args.batch_size,
        "render_seconds": round(render_seconds, 1),
        "job_wall_seconds": round(total_seconds, 1),
        "training_loop_seconds": round(training_seconds, 1),
        "pairs_per_second": round(pairs_per_second, 1),
        "median_step_ms": round(step_ms, 1),
        "heldout_accuracy": round(heldout["accuracy"], 4),
        "heldout_accuracy_ci": [round(v, 4) for v in heldout["accuracy_ci"]],
        "best_possible_accuracy": round(best_possible(rows, args.test_share, args.taste), 4),
        "rater_majority_agreement": round(ceiling["accuracy"], 4),
        "baseline_linear": baseline,
        "accuracy_vs_baseline": round(heldout["accuracy"] / baseline["heldout_accuracy"], 3),
        "taste": args.taste,
        "reused_database": reused,
    }
    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
