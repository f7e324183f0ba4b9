"""The loop's wall time: its RL run gets what the collection and the evaluation leave."""

from dataclasses import replace

from reward.closed_loop_budgets import BUDGETS


def test_the_rl_run_gets_the_wall_time_less_what_was_spent_and_what_the_evaluation_needs():
    small = BUDGETS["small"]
    assert small.wall_seconds == 19 * 60 and small.evaluation_seconds == 180
    # Collection and reward models took 65 s: 1,140 - 65 - 180 s are left for RL.
    assert small.rl_seconds(65.0) == 895.0
    # Collection overran the wall time: one step, then the run stops.
    assert small.rl_seconds(2_000.0) == 1.0
    assert replace(small, wall_seconds=None).rl_seconds(65.0) is None
    assert BUDGETS["tiny"].rl_seconds(0.0) is None  # the test suite's loop is never cut
