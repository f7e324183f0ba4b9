from django.urls import path

from reward import api, views, views_finetune

urlpatterns = [
    path("manage/rewards/", views.reward_model_list, name="reward-model-list"),
    path("manage/rewards/new/", views.reward_model_create, name="reward-model-create"),
    path(
        "manage/rewards/<int:reward_model_id>/",
        views.reward_model_detail,
        name="reward-model-detail",
    ),
    path(
        "manage/rewards/<int:reward_model_id>/cancel/",
        views.reward_model_cancel,
        name="reward-model-cancel",
    ),
    path("api/v1/reward-models/", api.RewardModelListView.as_view(), name="api-reward-models"),
    path(
        "api/v1/reward-models/<int:reward_model_id>/",
        api.RewardModelDetailView.as_view(),
        name="api-reward-model",
    ),
    path(
        "api/v1/reward-models/<int:reward_model_id>/cancel/",
        api.RewardModelCancelView.as_view(),
        name="api-reward-model-cancel",
    ),
    path("manage/finetune/", views_finetune.run_list, name="finetune-list"),
    path("manage/finetune/new/", views_finetune.run_create, name="finetune-create"),
    path("manage/finetune/<int:run_id>/", views_finetune.run_detail, name="finetune-detail"),
    path("manage/finetune/<int:run_id>/cancel/", views_finetune.run_cancel, name="finetune-cancel"),
    path(
        "manage/finetune/<int:run_id>/evaluate/",
        views_finetune.run_evaluate,
        name="finetune-evaluate",
    ),
    path(
        "manage/finetune/<int:run_id>/samples/<int:index>",
        views_finetune.run_sample,
        name="finetune-sample",
    ),
    path(
        "api/v1/finetune-runs/<int:run_id>/",
        api.FineTuneRunDetailView.as_view(),
        name="api-finetune-run",
    ),
]
