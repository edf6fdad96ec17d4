# One image for the web process (daphne) and the Celery workers.
#   docker compose up --build
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings

WORKDIR /app

# Dependencies first, so code changes do not reinstall them: the same lock `make`
# installs (compiled from pyproject.toml by `make lock`, pinned with hashes; it
# includes psycopg for PostgreSQL).
COPY requirements.lock ./
RUN pip install -r requirements.lock

# The application, listed one by one so that .venv/, var/ (the local database and
# secret key) and .git/ never end up in the image.
COPY manage.py pyproject.toml ./
COPY config/ config/
COPY runner/ runner/
COPY designer/ designer/
COPY templates/ templates/
COPY static/ static/

# Static files are collected at build time into /app/var/static (STATIC_ROOT).
# The key here only lets settings load; the real one comes from the environment.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0 \
    && useradd --system --uid 1000 --home-dir /app --shell /usr/sbin/nologin app \
    && chown -R app:app /app/var

USER app
EXPOSE 8000

# docker-compose.yml runs `migrate` before this for the web service and replaces it
# with `celery ... worker` for the workers.
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "config.asgi:application"]
