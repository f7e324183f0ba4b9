from django.urls import include, path
from rest_framework.routers import SimpleRouter

from ratings import views, views_crowd, views_leaderboard, views_playground, views_research
from ratings.api import leaderboard as leaderboard_api
from ratings.api import playground as playground_api
from ratings.api import research
from ratings.api import views as api_views

# Names come out as research-<basename>-list / -detail.
research_router = SimpleRouter()
research_router.register("votes", research.VoteViewSet, basename="research-vote")
research_router.register("ratings", research.RatingViewSet, basename="research-rating")
research_router.register("prompts", research.PromptViewSet, basename="research-prompt")
research_router.register("tracks", research.TrackViewSet, basename="research-track")
research_router.register("campaigns", research.CampaignViewSet, basename="research-campaign")
research_router.register("snapshots", research.SnapshotViewSet, basename="research-snapshot")

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("rate/<int:campaign_id>/", views.rate, name="rate"),
    path("play/", views_playground.playground, name="playground"),
    path("join/<int:campaign_id>/", views_crowd.join, name="join"),
    path("join/<int:campaign_id>/complete/", views_crowd.join_complete, name="join-complete"),
    path("manage/quality/", views_crowd.quality, name="quality"),
    path("clips/<uuid:public_id>", api_views.ClipView.as_view(), name="clip"),
    path("manage/campaigns/", views.campaign_list, name="campaign-list"),
    path("manage/campaigns/new/", views.campaign_create, name="campaign-create"),
    path("manage/campaigns/<int:campaign_id>/", views.campaign_detail, name="campaign-detail"),
    path(
        "api/v1/assignments/next/",
        api_views.NextAssignmentView.as_view(),
        name="api-assignment-next",
    ),
    path("api/v1/votes/", api_views.VoteView.as_view(), name="api-votes"),
    path(
        "api/v1/playground/requests/",
        playground_api.PlaygroundRequestListView.as_view(),
        name="api-playground-requests",
    ),
    path(
        "api/v1/playground/requests/<int:pk>/",
        playground_api.PlaygroundRequestDetailView.as_view(),
        name="api-playground-request",
    ),
    path(
        "api/v1/playground/requests/<int:pk>/retry/",
        playground_api.PlaygroundRetryView.as_view(),
        name="api-playground-retry",
    ),
    path(
        "api/v1/playground/requests/<int:pk>/download/",
        playground_api.PlaygroundDownloadView.as_view(),
        name="api-playground-download",
    ),
    path(
        "api/v1/playground/examples/",
        playground_api.PlaygroundExamplesView.as_view(),
        name="api-playground-examples",
    ),
    path("api/v1/leaderboard/", leaderboard_api.LeaderboardView.as_view(), name="api-leaderboard"),
    path("leaderboard/<int:campaign_id>/", views_leaderboard.leaderboard_page, name="leaderboard"),
    path("research/", views_research.research_home, name="research"),
    path("api/v1/research/", include(research_router.urls)),
    path(
        "api/v1/research/snapshots/<int:pk>/files/<path:relative>",
        research.SnapshotFileView.as_view(),
        name="research-snapshot-file",
    ),
]
