# One image for every AdFlux service (they share one code base and one dependency set, so one
# image is built once and cached once); compose.yaml picks the service with its command
# (`python -m services.<name>`). Built by `make images` (infra/images/build.py), which passes
# BASE_IMAGE: the official python:3.11-slim where a registry answers, else a Debian bookworm
# base built here. Dependencies come from the host-built wheelhouse (.cache/wheelhouse), so
# the build itself needs no network.
ARG BASE_IMAGE=docker.io/library/python:3.11-slim
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONPATH=/app
RUN useradd --create-home --uid 10001 adflux && python3 -m venv /opt/venv
RUN --mount=type=bind,source=.cache/wheelhouse,target=/wheels \
    pip install --no-index --find-links /wheels -c /wheels/constraints.txt -r /wheels/requirements.txt
WORKDIR /app
COPY infra/images/healthcheck.py /usr/local/bin/adflux-healthcheck
COPY config ./config
COPY schemas ./schemas
COPY shared ./shared
COPY services ./services
COPY adplatforms ./adplatforms
USER adflux
ENV ADFLUX_DATA_DIR=/home/adflux/data
EXPOSE 8000 8010 8011 9101 9102 9103 9104
# The services handle SIGTERM themselves (they run as PID 1 and shut down cleanly).
HEALTHCHECK --interval=10s --timeout=5s --retries=6 CMD ["python", "/usr/local/bin/adflux-healthcheck"]
CMD ["python", "-m", "services.gateway"]
