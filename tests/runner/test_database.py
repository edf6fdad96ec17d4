"""The tests run on the database they were asked for: SQLite in WAL mode, or PostgreSQL."""

import os

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_the_database_is_the_one_the_run_asked_for():
    if os.environ.get("TEST_POSTGRES") == "1":
        assert connection.vendor == "postgresql"
        with connection.cursor() as cur:
            cur.execute("SHOW server_version")
            assert int(cur.fetchone()[0].split(".")[0]) >= 13
    else:
        assert connection.vendor == "sqlite"
        with connection.cursor() as cur:
            cur.execute("PRAGMA journal_mode")
            assert cur.fetchone()[0] == "wal"  # daphne, workers and the CLI share the file
