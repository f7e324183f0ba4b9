from django.urls import path

from ratings import views
from ratings.api import views as api_views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("rate/<int:campaign_id>/", views.rate, name="rate"),
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
]
