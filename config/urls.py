from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from designer import people
from designer import views as designer_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("setup/", designer_views.setup, name="setup"),
    path("accounts/login/", designer_views.login, name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("accounts/password/", people.choose_password, name="choose-password"),
    path("invite/<str:token>/", people.invitation, name="invitation"),
    path("", include("designer.urls")),
]
