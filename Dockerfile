# tunefit: the web service (`tunefit serve`, the default command) or a profiling worker
# (`tunefit worker`), with the CPU profiler by default.
#
#   docker build -t tunefit .                        # CPU: python:3.11-slim, torch's CPU wheel
#   docker build -t tunefit:cuda \
#     --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX_URL= .                 # CUDA: torch's default (CUDA) wheel on a CUDA base
#
# A base without Python 3.11 (the CUDA images) gets it from the distribution's packages. EXTRAS
# picks the project's extras: the profiler (torch pinned by pyproject.toml), the fleet (Celery +
# Redis, for compose.yaml's worker) and the PostgreSQL driver (compose.yaml's postgres profile).
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG EXTRAS=profiler,fleet,postgres
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3008: python3.11 is the base release's own package; a pinned revision breaks at its next update.
# hadolint ignore=DL3008
RUN if ! command -v python3.11 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3.11 -m venv /opt/venv

WORKDIR /srv/tunefit
COPY pyproject.toml README.md ./
COPY estimator ./estimator
COPY profiler ./profiler
COPY app ./app
COPY templates ./templates
COPY reports ./reports
# The project's own pyproject.toml pins what must be pinned (torch==2.13.0 and the libraries whose
# internals the profiler follows); DL3013 cannot see the pins of a local path.
# hadolint ignore=DL3013
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} ".[${EXTRAS}]" \
    && useradd --create-home --uid 10001 tunefit \
    && mkdir -p /srv/tunefit/data && chown 10001 /srv/tunefit/data

ENV TUNEFIT_DATA_DIR=/srv/tunefit/data TUNEFIT_HOST=0.0.0.0 TUNEFIT_PORT=8000
VOLUME /srv/tunefit/data
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["tunefit", "serve"]
