"""The project's configuration. The Celery app (`config.celery`) is loaded by what sends
or runs Celery work (`celery -A config worker`, `runner.engine.ports.enqueue`), not by
every Django start-up: the command line, which never sends any, starts without it."""


def __getattr__(name):
    if name == "celery_app":
        from .celery import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
