"""The designer's pages. Each topic module holds its views and its urlpatterns."""

from django.urls import path

from . import (
    assignments,
    editor,
    exports,
    launch,
    people,
    pipelines,
    providers,
    review,
    runs,
    views,
)

app_name = "designer"

urlpatterns = [
    path("", views.home, name="home"),
    *pipelines.urlpatterns,
    *providers.urlpatterns,
    *editor.urlpatterns,
    *launch.urlpatterns,
    *runs.urlpatterns,
    *review.urlpatterns,
    *exports.urlpatterns,
    *people.urlpatterns,
    *assignments.urlpatterns,
]
