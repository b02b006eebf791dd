# iam-key-rotator container image.
# No `# syntax=` line on purpose: it makes BuildKit pull docker/dockerfile from Docker Hub on every build,
# which air-gapped builders cannot reach; the built-in frontend (Docker >= 20.10) handles RUN --mount.
#   docker build -t iam-key-rotator .
#   docker run --read-only --tmpfs /tmp --stop-timeout 90 -v /etc/rotator:/etc/rotator:ro \
#     -e AWS_REGION=eu-west-1 -p 127.0.0.1:9464:9464 iam-key-rotator
# (docs/operations.md "Install as a container": mount the directory, not the file, so a SIGHUP reload sees an
# edited config; --stop-timeout above the daemon's 25 s drain.)
# AWS credentials come from boto3's chain (task/pod role, AWS_* env), never from the config file.

ARG BASE_IMAGE=python:3.11-slim

# ---- builder: wheels for the project and all its dependencies ----
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore allow-lists what the build needs (pyproject.toml, README, rotator/).
COPY . .
# Dependencies are resolved against pyproject.toml's version ranges; nothing is installed by bare name here.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- runtime ----
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="iam-key-rotator" \
      org.opencontainers.image.description="Rotates AWS IAM access keys into Secrets Manager" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    ROTATOR_METRICS__ADDRESS=0.0.0.0
# Offline install from the builder's wheels only (--no-index): the image gets exactly what was built. The venv is
# byte-compiled here, at build time, so a read-only root file system costs nothing at run time.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && groupadd --system --gid 10001 rotator \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin rotator
WORKDIR /tmp
# Numeric UID:GID so Kubernetes runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 9464
# No curl in the image: the stdlib does it. urlopen raises (exit 1) on connection errors and non-2xx answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROTATOR_METRICS__PORT', '9464'), timeout=4)"]
ENTRYPOINT ["rotator"]
CMD ["run"]
