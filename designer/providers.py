"""Views: see the module docstring once written."""

urlpatterns = []
