"""Settings for the test suite: the product's settings, with a test Redis and a test database.

The integration tests start a real Redis server on TEST_REDIS_PORT and real Celery
workers that open the same SQLite file as the tests (WAL mode). With TEST_POSTGRES=1
the tests start their own PostgreSQL server (tests/pg.py) and use it instead.
"""

import os
from pathlib import Path

TEST_REDIS_PORT = int(os.environ.setdefault("TEST_REDIS_PORT", "6391"))
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{TEST_REDIS_PORT}/0"
os.environ.setdefault("CELERY_RESULT_BACKEND", "disabled")
# Fixed, so the test process and the workers it starts agree while tests flush the
# database (tests of the default, made from the database, unset it).
os.environ.setdefault("RUNNER_KEY_PREFIX", f"pdtest{TEST_REDIS_PORT}:")
# A `make run` on this checkout does not lend the tests its default provider.
os.environ.setdefault("PD_RUN_FILE", "")
# The embedded setup's API-key encryption key, for the tests (and the workers they start).
os.environ.setdefault(
    "FIELD_ENCRYPTION_KEY_FILE",
    str(Path(__file__).resolve().parent.parent / "var" / "test" / "field-encryption-key"),
)

if os.environ.get("TEST_POSTGRES") == "1" and not os.environ.get("TEST_SUBPROCESS"):
    # A private PostgreSQL server for this test process (and the workers it starts,
    # which inherit DATABASE_URL): the database paths run on the production database.
    from tests import pg

    os.environ["DATABASE_URL"] = pg.start()

from config.settings import *  # noqa: E402,F403
from config.settings import BASE_DIR, DATABASES  # noqa: E402

TEST_DB_PATH = Path(os.environ.get("TEST_DB_PATH", BASE_DIR / "var" / "test" / "test.sqlite3"))
TEST_DB_PATH.parent.mkdir(parents=True, exist_ok=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _test_name = "test_" + DATABASES["default"]["NAME"]
    DATABASES["default"]["TEST"] = {"NAME": _test_name}
    if os.environ.get("TEST_SUBPROCESS"):
        # daphne, workers and commands started by the tests open the test database itself.
        DATABASES["default"]["NAME"] = _test_name
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": str(TEST_DB_PATH)}
    if os.environ.get("TEST_SUBPROCESS"):
        # daphne, workers and commands started by the tests open the test database itself.
        DATABASES["default"]["NAME"] = str(TEST_DB_PATH)
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
