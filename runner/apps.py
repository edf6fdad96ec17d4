from django.apps import AppConfig


class RunnerConfig(AppConfig):
    name = "runner"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # The events layer listens to the engine's run_changed (saved first, announced second).
        from django.conf import settings

        from runner.events import progress  # noqa: F401
        from runner.spec import templating

        templating.configure(
            seconds=settings.RUNNER_TEMPLATE_SECONDS,
            chars=settings.RUNNER_TEMPLATE_MAX_CHARS,
            steps=settings.RUNNER_TEMPLATE_MAX_STEPS,
        )
