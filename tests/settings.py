"""Settings for the test suite: the product's settings, with a test Redis and a test database file.

The integration tests start a real Redis server on TEST_REDIS_PORT and real Celery
workers that open the same SQLite file as the tests (WAL mode).
"""

import os
from pathlib import Path

TEST_REDIS_PORT = int(os.environ.setdefault("TEST_REDIS_PORT", "6391"))
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{TEST_REDIS_PORT}/0"
os.environ.setdefault("CELERY_RESULT_BACKEND", "disabled")

from config.settings import *  # noqa: E402,F403
from config.settings import BASE_DIR, DATABASES  # noqa: E402

TEST_DB_PATH = Path(os.environ.get("TEST_DB_PATH", BASE_DIR / "var" / "test" / "test.sqlite3"))
TEST_DB_PATH.parent.mkdir(parents=True, exist_ok=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_DB_PATH)}
    if os.environ.get("TEST_SUBPROCESS"):
        # daphne, workers and commands started by the tests open the test database itself.
        DATABASES["default"]["NAME"] = str(TEST_DB_PATH)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
