# The portal's image: the web process by default (gunicorn, gunicorn.conf.py); the same image runs
# a background worker with `flask --app wsgi jobs worker`. docs/operations.md: Deploy.
#
# Build stage: a virtual environment with the package and its dependencies (not the dev ones),
# and the compiled message catalogs.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
RUN python -m venv /opt/venv
COPY pyproject.toml ./
COPY portal ./portal
COPY workers ./workers
# Editable: the portal runs from /app, where it finds migrations/ and translations/ and writes
# build/static/ (portal.config.PROJECT_ROOT), so the package points there.
RUN /opt/venv/bin/pip install --no-cache-dir --editable .
COPY wsgi.py healthcheck.py gunicorn.conf.py alembic.ini babel.cfg ./
COPY migrations ./migrations
COPY translations ./translations
RUN /opt/venv/bin/pybabel compile --directory translations --statistics

# Runtime stage: the same paths, owned by root and read-only to the user that runs the portal,
# but for instance/ (development's files, the default PORTAL_STORAGE_DIR) and build/static/
# (the static files written at start-up).
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORTAL_ENV=production \
    PORT=8000

RUN groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid portal --home-dir /app --no-create-home portal
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
RUN mkdir -p instance/files build/static \
    && chown -R portal:portal instance build

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "healthcheck.py"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
