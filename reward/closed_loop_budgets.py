"""How much the closed loop does at each size (`musicrl_loop --budget`): prompts, votes,
raters, clip length, training steps and the RL settings, and the rounds of collection it may
spend before it gives up on finding a taste to optimise."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    collect_prompts: int
    votes_per_item: int
    raters: int
    clip_seconds: float
    reward_steps: int
    rl_steps: int  # per stage
    eval_votes_per_item: int
    min_listen_seconds: float = 0.2  # simulated raters wait it out in real time
    adherence_corpus: int = 512  # captioned composer clips for the music tower
    adherence_steps: int = 600
    # Measured on the planned base with the default taste itself as the reward
    # (benchmarks/rl_oracle.py, 60 steps of 8 x 4 samples, kl_loss 0.25, beta 0.02): 1e-3
    # ran the KL to 60 nats by step 10 and the reward rose, then fell below the base's by
    # step 30; 1e-4 raised it steadily at a KL of about 2 nats and kept adherence (expected
    # win rate 0.65 against the base); 3e-4, 0.63 at 9 nats with instrument fit 0.02 lower.
    rl_learning_rate: float = 1e-4
    rl_min_learning_rate: float = 1e-4
    rl_beta: float = 0.02
    rl_kl_loss: float = 0.25
    rl_prompts_per_step: int = 8
    rl_samples_per_prompt: int = 4
    rl_estimator: str = "rloo"  # reward/learning/rl.py: "rloo" or "best_of_group"
    rl_plan_kl_weight: float = 0.0
    # Share of each prompt's RL samples drawn for the prompt varied along one of the fields
    # the votes pull (reward/learning/rl.py, closed_loop_objective.taste_fields); none when
    # they pull none. The base plays the tempo asked for in every sample (1,024 of 1,024
    # sampled plans of the held-out prompts), so without it no reward moves the tempo.
    # Measured (`musicrl_loop --budget small`, one run each, at 3e-4, varying every axis):
    # prefers_slower won 0.63 [0.56, 0.69] with exploration 0.5, against 0.48 without (tempo
    # fit 0.795 against 1.000); the default taste, which pulls no prompt field, won 0.656
    # [0.589, 0.716], below the 0.755 at 1e-4 without, its key fit falling 0.344 -> 0.266.
    rl_explore_share: float = 0.5
    rl_explore_learning_rate: float = 3e-4  # the learning rate of a run that explores
    # What RL's objective loses per unit of fit a sample gives up on a field the votes do not
    # pull (RLOOConfig.keep_weight), in normalised reward units: its plan's, which the prompt
    # lock holds anyway, and its notes' agreement with the plan on instruments, drums and
    # density (`reward_hacking.strayed`). A body that plays fewer notes than its plan declares
    # sounds more detached, so a taste for staccato paid for it: with the taste itself as the
    # reward (the oracle runs under rl_body_only_beta, beta 0), the held-out notes' density
    # fit was 0.882 at 2 and 0.925 at 10 (the base's 0.952), and the expected win rate 0.830
    # and 0.826.
    rl_keep_weight: float = 10.0
    # Steps on plans alone before the U and RU runs' whole sequences (finetune's plan_steps):
    # each plan is heard as the composer plays it, at milliseconds a sample, so a taste that
    # lives in the plan moves in many cheap samples; the whole-sequence steps then teach the
    # body to play the plans it now writes. Measured with the default taste as the exact
    # reward (benchmarks/rl_oracle.py --part plan, 100 steps of 16 x 8 plans, every field
    # kept, kl_loss 0.02; one run each): 0.809 against the base at 3e-4 without the prompt
    # lock (held-out notes' instrument fit 0.982, tempo 0.986), 0.785 at 1e-3 with it
    # (0.997, 1.000), where 60 whole-sequence steps won 0.682. The small loop with it, on
    # the default taste: 0.835 [0.784, 0.877] (plan stage about 230 s, then 239 whole
    # steps). None for R: the base plays its prompts' fields as asked already.
    rl_plan_steps: int = 0
    rl_plan_prompts_per_step: int = 16
    rl_plan_samples_per_prompt: int = 8
    rl_plan_learning_rate: float = 1e-3
    # The plan stages' per-token KL weight (finetune's plan_kl_loss), that of the oracle
    # runs above: at rl_kl_loss (0.25) a `prefers_slower` loop's plan stage moved the tempo
    # of few prompts (plans' tempo fit 0.76 on the held-out prompts, win rate 0.63); at
    # 0.02, 0.984 [0.960, 0.994] (tempo fit 0.04, every other field kept), and the default
    # taste 0.919 [0.878, 0.947] (one run each, with the supported-features reward).
    rl_plan_kl_loss: float = 0.02
    # A run whose reward weighs only what the notes alone decide (taste_fields.body_only)
    # has no plan stage, and its whole-sequence steps must move the body itself: every
    # note's length, say, for a taste for staccato. At rl_kl_loss and rl_learning_rate a
    # `prefers_staccato` loop's 250 steps left the training reward flat (0.48 at step 1,
    # 0.20 at step 221) and won 0.518 [0.448, 0.587]. Such a run takes the plan stages' KL
    # weight, the exploring learning rate and up to twice the steps (the wall time still
    # stops it): the same taste's loop then raised that reward to about 1 (KL about 30
    # nats) in 390 steps and won 0.855 [0.804, 0.895] (one run each).
    rl_body_only_kl_loss: float = 0.02
    # Nor does it charge the sequence-level KL (beta), which grows with every note the body
    # changes: a taste for staccato moves every note's length. With the taste itself as the
    # reward (`benchmarks/rl_oracle.py --taste prefers_staccato --heard-seconds 4 --kl-loss
    # 0.02 --learning-rate 3e-4 --kept-fields tempo instruments drums mode density key
    # --steps 60 --threads 1`, one run each), beta 0.02 won an expected 0.705 against the
    # base and 0.660 at --keep-weight 10; beta 0, 0.830 and 0.826 (base's best of 8: 0.613).
    rl_body_only_beta: float = 0.0
    rl_body_only_learning_rate: float = 3e-4
    rl_body_only_steps_factor: int = 2
    rl_num_threads: int = 2  # the loop has the machine to itself (finetune's num_threads)
    rl_train_prompts: int = 2000  # the pools RL samples from and is judged on
    rl_held_out_prompts: int = 64  # also the evaluation campaign's prompts
    # When no preference model beats chance, collect another campaign of collect_prompts
    # new prompts, up to this many in all, before giving up.
    max_collect_rounds: int = 2
    # Share of collect pairs that set a clip against a variant of it changed along one
    # audible axis (tempo, transposition, drums, instruments, density, articulation,
    # loudness, parts, mode): votes that isolate an axis, including how much each of the prompt's
    # attributes matters to the raters.
    collect_variant_share: float = 0.5
    # The share in a round that follows one whose votes did not pin a taste down: all of
    # them. Two samples of the base differ along an axis only as much as the base varies it,
    # and where it plays the same way every time (it keeps to the tempo asked for) only a
    # variant shows whether the raters care: in a `prefers_slower` run, 18 of 192 first-round
    # pairs differed in tempo, all of them variants.
    followup_variant_share: float = 1.0
    # A first round's votes that support a taste may still leave an axis in doubt: a weight
    # that passes its own two-sided test at this error but not the one shared among every
    # feature (`closed_loop_objective.uncertain_axes`). While the rounds allow, the loop then
    # collects a round whose pairs vary those axes alone. In a first round a mode variant is
    # about 1 pair in 18 (half the pairs vary one of nine axes): two `prefers_darker` runs'
    # models weighed minor at z +4.4 in one and left it out in the other. With this round
    # (one run), the first round left tempo, drums and density fit in doubt; on all 576
    # votes minor was supported and the candidate won 0.933 [0.895, 0.958]. Each such round
    # took 69-79 s from RL. None: no such round.
    uncertain_axis_error: float | None = 0.05
    # A preference model must beat chance on prompts it never saw to be optimised
    # (`better_than_chance`); while its accuracy interval's lower end stays below this, the
    # loop first collects another round if the budget allows (objective_decide). A
    # `prefers_legato` run optimised a model at 0.596 [0.513, 0.675] held out, and its
    # candidate won 0.50 [0.43, 0.57].
    confident_accuracy_lower: float = 0.55
    # The evaluation votes until this many are decisive (ties excluded), adding a vote per
    # pair at a time, at most three times.
    min_decisive_votes: int = 180
    # The audio preference network (and the music tower that starts its encoder) is trained
    # only on at least this many votes. In the loop's runs on the planned base it never beat
    # chance below that: 0.403 [0.264, 0.565] and 0.535 on 288 votes' held-out fifth, 0.598
    # [0.488, 0.705] on 576 votes', while the measured-feature model did (0.653-0.757).
    audio_min_votes: int = 1000
    # The loop's wall time: its RL run stops early (keeping what it learned) so that the loop
    # ends within it, whatever a taste does to the length of the samples; None: no limit.
    # `--presets` runs, several RL runs and evaluations, take what they need.
    wall_seconds: float | None = None
    # Whole pieces per held-out prompt and version on which the report reads the candidate's
    # prompt adherence beside its parent's (`evaluations.held_out_adherence`).
    adherence_samples_per_prompt: int = 4
    # What the RL run leaves for the evaluation campaign (clips, votes, report) and the
    # whole pieces the report reads adherence on (256 per version): from the evaluation's
    # start to the loop's end 90-125 s in six `small` runs, and up to three more rounds of
    # votes may follow (about 10 s each).
    evaluation_seconds: float = 180.0

    def rl_seconds(self, spent_seconds: float) -> float | None:
        """The time the loop's RL run may take once the loop has spent `spent_seconds`: the
        wall time less that and what the evaluation needs, at least a second (one step,
        then the run stops). None without a wall time."""
        if self.wall_seconds is None:
            return None
        return max(1.0, self.wall_seconds - spent_seconds - self.evaluation_seconds)

    def most_votes(self) -> int:
        """The collect votes the budget allows in all its rounds."""
        return self.collect_prompts * self.votes_per_item * self.max_collect_rounds


BUDGETS = {
    # For the test suite: every stage runs and leaves its objects; nothing is learned.
    "tiny": Budget(
        collect_prompts=12,
        votes_per_item=2,
        raters=4,
        clip_seconds=2.0,
        reward_steps=10,
        rl_steps=1,  # one step, one held-out evaluation, one checkpoint: the stage runs
        eval_votes_per_item=2,
        adherence_corpus=32,
        adherence_steps=10,
        rl_train_prompts=32,
        rl_held_out_prompts=4,
        rl_prompts_per_step=2,  # 4 samples a step: the stage runs, nothing is learned
        rl_samples_per_prompt=2,
        rl_plan_steps=1,
        rl_plan_prompts_per_step=2,
        rl_plan_samples_per_prompt=2,
        rl_num_threads=1,  # the test suite runs two processes at once
        min_decisive_votes=0,
        adherence_samples_per_prompt=1,
        audio_min_votes=0,  # every model trains, so the test covers every stage
    ),
    "small": Budget(
        collect_prompts=96,
        votes_per_item=3,
        raters=12,
        clip_seconds=4.0,
        reward_steps=300,
        # With campaign clips sampled together and ended rows dropped from sampling batches, a
        # loop of 100 steps took 482 s and won 0.66 [0.60, 0.72]; 250 steps took 962 s (RL
        # 863 s, under the 20 minutes) and won 0.755 [0.69, 0.81] (default taste, one run each).
        rl_steps=250,
        rl_plan_steps=100,
        eval_votes_per_item=4,  # 256 votes over 64 held-out prompts: >= 180 decisive
        wall_seconds=19 * 60,  # issue 15: a loop in 20 minutes, the command's start-up included
    ),
    "full": Budget(
        collect_prompts=400,
        votes_per_item=5,
        raters=40,
        clip_seconds=10.0,
        reward_steps=1500,
        rl_steps=200,
        eval_votes_per_item=5,
        rl_held_out_prompts=100,
        max_collect_rounds=3,
    ),
}
