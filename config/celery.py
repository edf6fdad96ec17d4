import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class App(Celery):
    """Celery, with every broker key under this deployment's prefix (runner.engine.keys).

    The prefix comes from the database, so it is read when the first connection is
    made (Django is set up by then), not when this module is imported."""

    def _connection(self, url, transport_options=None, **kwargs):
        from runner.engine.keys import prefix

        options = {"global_keyprefix": prefix(), **(transport_options or {})}
        return super()._connection(url, transport_options=options, **kwargs)


app = App("pipeline_designer")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
