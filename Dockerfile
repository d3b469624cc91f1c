# CPU image by default; pass --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 style bases for GPU hosts.
ARG BASE=python:3.11-slim
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv/tunefit
COPY pyproject.toml README.md ./
COPY estimator ./estimator
COPY profiler ./profiler
COPY app ./app
COPY templates ./templates
RUN pip install --no-cache-dir '.[profiler]' && useradd --create-home tunefit \
    && mkdir -p /srv/tunefit/data && chown tunefit /srv/tunefit/data
ENV TUNEFIT_DATA_DIR=/srv/tunefit/data
VOLUME /srv/tunefit/data
USER tunefit
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["tunefit", "serve", "--host", "0.0.0.0", "--port", "8000"]
