"""The leaderboard page of a campaign: the stored Bradley-Terry table and a chart of ratings
with their 95% intervals (researcher and above; admins may queue a refresh)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from ratings import tasks
from ratings.models import Campaign, Leaderboard, Role
from ratings.roles import has_role
from ratings.views import role_required

CHART_WIDTH = 640
CHART_LABEL_WIDTH = 170
CHART_ROW_HEIGHT = 26
CHART_MARGIN = 24


def leaderboard_chart(rows: list[dict]) -> dict[str, object]:
    """Pixel geometry of an inline SVG: one row per version, a dot at its rating and a bar over
    its interval, on an axis spanning every interval (drawn server-side: no script, no CDN)."""
    if not rows:
        return {"rows": [], "ticks": [], "height": 0, "width": CHART_WIDTH}
    low = min(row["ci_low"] for row in rows)
    high = max(row["ci_high"] for row in rows)
    pad = max((high - low) * 0.05, 5.0)
    low, high = low - pad, high + pad
    plot_left, plot_right = CHART_LABEL_WIDTH, CHART_WIDTH - CHART_MARGIN

    def x(value: float) -> float:
        return round(plot_left + (value - low) / (high - low) * (plot_right - plot_left), 1)

    height = CHART_MARGIN * 2 + CHART_ROW_HEIGHT * len(rows)
    step = (high - low) / 4
    return {
        "width": CHART_WIDTH,
        "height": height,
        "axis_y": height - CHART_MARGIN,
        "plot_left": plot_left,
        "plot_right": plot_right,
        "ticks": [{"x": x(low + k * step), "label": round(low + k * step)} for k in range(5)],
        "rows": [
            {
                "y": CHART_MARGIN + CHART_ROW_HEIGHT * (k + 0.5),
                "label_y": CHART_MARGIN + CHART_ROW_HEIGHT * (k + 0.5) + 4,
                "x_low": x(row["ci_low"]),
                "x_high": x(row["ci_high"]),
                "x": x(row["rating"]),
                "name": row["name"],
                "rating": row["rating"],
                "rank": row["rank"],
            }
            for k, row in enumerate(rows)
        ],
    }


@require_http_methods(["GET", "POST"])
@role_required(Role.RESEARCHER)
def leaderboard_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """Researcher and above: GET the stored leaderboard. Admin: POST to queue a recompute."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    if request.method == "POST":
        if not has_role(request.user, Role.ADMIN):
            raise PermissionDenied("Only an admin may queue a leaderboard refresh.")
        tasks.refresh_leaderboard.delay_on_commit(campaign.pk)
        messages.info(request, "Refresh queued; reload in a moment.")
        return redirect("leaderboard", campaign_id=campaign.pk)
    board = Leaderboard.objects.filter(campaign=campaign).first()
    rows = board.rows if board else []
    context = {
        "campaign": campaign,
        "board": board,
        "rows": rows,
        "chart": leaderboard_chart(rows),
        "can_refresh": has_role(request.user, Role.ADMIN),
    }
    return render(request, "ratings/leaderboard.html", context)
