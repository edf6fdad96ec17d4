from django.apps import AppConfig


class RunnerConfig(AppConfig):
    name = "runner"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The events layer listens to the engine's run_changed (saved first, announced second).
        from runner.events import progress  # noqa: F401
