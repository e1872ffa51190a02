# syntax=docker/dockerfile:1
# streamer's container image: a wheel built in one stage, installed into a slim runtime as a
# non-root user. The config and templates are mounted (see compose.yaml and README "Running in
# production"); secrets come from the environment through the config's ${VAR}s.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamer ./streamer
# streamer/bundled/{templates,config} are symlinks to these: the wheel carries the files.
COPY templates ./templates
COPY config ./config
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMER_CONFIG=/etc/streamer/streamer.yaml
RUN useradd --system --uid 10001 --home-dir /var/lib/streamer --create-home --shell /usr/sbin/nologin streamer
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# /etc/streamer: streamer.yaml and templates/, mounted read-only. /var/lib/streamer: a SQLite
# store, if one is used (PostgreSQL needs no volume here).
VOLUME ["/var/lib/streamer"]
WORKDIR /var/lib/streamer
USER 10001
# The config must listen on 0.0.0.0:8080 (server.listen) for the port and the health check.
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamer"]
CMD ["run"]
