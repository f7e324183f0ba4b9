from django.urls import path

from reward import api, views

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
]
