"""Fine-tuning run pages. Researchers read everything; only admins start, cancel, or turn a
finished run into an evaluation campaign."""

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ratings.dataset import DataFilters
from ratings.models import Role
from ratings.roles import has_role
from ratings.views import role_required
from reward import finetune, finetune_results, selectors
from reward.forms import FineTuneRunForm
from reward.models import FineTuneRun

# The run settings the form sets; the rest keep their defaults (reward.finetune_settings).
RUN_SETTINGS = (
    "learning_rate", "beta", "kl_loss", "samples_per_prompt", "prompts_per_step", "kl_limit",
    "guard_action", "estimator",
)  # fmt: skip


@require_GET
@role_required(Role.RESEARCHER)
def run_list(request: HttpRequest) -> HttpResponse:
    """Researcher and above: every fine-tuning run."""
    runs = FineTuneRun.objects.select_related("base_version", "result_version").order_by(
        "-created_at"
    )
    context = {"runs": runs, "can_start": has_role(request.user, Role.ADMIN)}
    return render(request, "reward/finetune_list.html", context)


@require_GET
@role_required(Role.RESEARCHER)
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """Researcher and above: progress, live curves, warnings, samples, the result."""
    run = get_object_or_404(
        FineTuneRun.objects.select_related("base_version", "result_version"), pk=run_id
    )
    is_admin = has_role(request.user, Role.ADMIN)
    context = {
        "run": run,
        "report": selectors.finetune_report(run),
        "can_cancel": is_admin and run.is_active,
        "can_evaluate": is_admin and run.result_version_id is not None,
    }
    return render(request, "reward/finetune_detail.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.ADMIN)
def run_create(request: HttpRequest) -> HttpResponse:
    """Admin: start a fine-tuning run on the train queue."""
    form = FineTuneRunForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            run = finetune.finetune_run_create(
                name=data["name"],
                base_version=data["base_version"],
                algorithm=data["algorithm"],
                preset=data["preset"],
                steps=data["steps"],
                reward_weights=form.reward_weights(),
                filters=DataFilters(campaign_ids=tuple(c.pk for c in data["campaigns"])),
                settings={key: data[key] for key in RUN_SETTINGS},
                created_by=request.user,
            )
        except finetune.FineTuneError as error:
            form.add_error(None, str(error))
        else:
            return redirect("finetune-detail", run_id=run.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "reward/finetune_form.html", {"form": form}, status=status)


@require_POST
@role_required(Role.ADMIN)
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    """Admin: stop a queued or running run (a running one stops at its next heartbeat)."""
    run = get_object_or_404(FineTuneRun, pk=run_id)
    finetune.finetune_run_cancel(run=run)
    return redirect("finetune-detail", run_id=run.pk)


@require_POST
@role_required(Role.ADMIN)
def run_evaluate(request: HttpRequest, run_id: int) -> HttpResponse:
    """Admin: an evaluate campaign, candidate vs its parent, on the run's held-out prompts."""
    run = get_object_or_404(FineTuneRun, pk=run_id)
    if run.result_version_id is None:
        return HttpResponse("The run has not produced a version yet.", status=409)
    evaluation = finetune_results.evaluation_for_run(run=run, created_by=request.user)
    return redirect("evaluation-detail", evaluation_id=evaluation.pk)


@require_GET
@role_required(Role.RESEARCHER)
def run_sample(request: HttpRequest, run_id: int, index: int) -> FileResponse:
    """Researcher and above: a clip sampled at a checkpoint (these are not rated blind, the
    run page says which step made them)."""
    run = get_object_or_404(FineTuneRun, pk=run_id)
    if not 0 <= index < len(run.samples):
        raise Http404("No such sample.")
    return FileResponse(default_storage.open(run.samples[index]["file"]), content_type="audio/ogg")
