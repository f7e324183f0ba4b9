"""Reward-model pages. Researchers read everything; only admins start or cancel training."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ratings.dataset import DataFilters
from ratings.models import Role
from ratings.roles import has_role
from ratings.views import role_required
from reward import selectors, training
from reward.forms import RewardModelForm
from reward.models import RewardModel


@require_GET
@role_required(Role.RESEARCHER)
def reward_model_list(request: HttpRequest) -> HttpResponse:
    """Researcher and above: every reward model with its status and headline metric."""
    context = {
        "rows": selectors.reward_model_rows(),
        "can_train": has_role(request.user, Role.ADMIN),
    }
    return render(request, "reward/reward_model_list.html", context)


@require_GET
@role_required(Role.RESEARCHER)
def reward_model_detail(request: HttpRequest, reward_model_id: int) -> HttpResponse:
    """Researcher and above: progress, live curves, data and metrics of one model."""
    reward_model = get_object_or_404(RewardModel, pk=reward_model_id)
    context = {
        "model": reward_model,
        "report": selectors.reward_model_report(reward_model),
        "can_cancel": has_role(request.user, Role.ADMIN) and reward_model.is_active,
    }
    return render(request, "reward/reward_model_detail.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.ADMIN)
def reward_model_create(request: HttpRequest) -> HttpResponse:
    """Admin: start training a reward model on the train queue."""
    form = RewardModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        filters = DataFilters(
            campaign_ids=tuple(campaign.pk for campaign in data["campaigns"]),
            protocols=tuple(data["protocols"]),
            since=data["since"],
            until=data["until"],
            min_rater_reliability=data["min_rater_reliability"],
            min_gold_accuracy=data["min_gold_accuracy"],
        )
        try:
            reward_model = training.reward_model_create(
                name=data["name"],
                kind=data["kind"],
                method=data["method"],
                steps=data["steps"],
                filters=filters,
                settings={
                    "learning_rate": data["learning_rate"],
                    "batch_size": data["batch_size"],
                    "test_share": data["test_share"],
                },
                created_by=request.user,
            )
        except training.RewardModelError as error:
            form.add_error(None, str(error))
        else:
            return redirect("reward-model-detail", reward_model_id=reward_model.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "reward/reward_model_form.html", {"form": form}, status=status)


@require_POST
@role_required(Role.ADMIN)
def reward_model_cancel(request: HttpRequest, reward_model_id: int) -> HttpResponse:
    """Admin: stop a queued or running job (a running one stops at its next heartbeat)."""
    reward_model = get_object_or_404(RewardModel, pk=reward_model_id)
    training.reward_model_cancel(reward_model=reward_model)
    return redirect("reward-model-detail", reward_model_id=reward_model.pk)
