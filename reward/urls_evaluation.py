from django.urls import path

from reward import views_evaluation as views

urlpatterns = [
    path("manage/evaluations/", views.evaluation_list, name="evaluation-list"),
    path(
        "manage/evaluations/<int:evaluation_id>/",
        views.evaluation_detail,
        name="evaluation-detail",
    ),
    path(
        "manage/evaluations/<int:evaluation_id>/promote/",
        views.evaluation_promote,
        name="evaluation-promote",
    ),
    path(
        "manage/evaluations/<int:evaluation_id>/retire/",
        views.evaluation_retire,
        name="evaluation-retire",
    ),
]
