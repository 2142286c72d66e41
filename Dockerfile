# One image for every AdFlux service; compose.yaml picks the service with its command
# (`python -m services.<name>`).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 adflux
COPY pyproject.toml constraints.txt ./
COPY shared ./shared
COPY services ./services
COPY config ./config
COPY schemas ./schemas
RUN pip install -c constraints.txt .
USER adflux
ENV ADFLUX_DATA_DIR=/home/adflux/data
EXPOSE 8000 8010 8011 9101 9102 9103 9104
CMD ["python", "-m", "services.gateway"]
