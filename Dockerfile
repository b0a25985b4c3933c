# Delineate server image. Build from the repository root:
#   docker build -t delineate .
FROM python:3.11.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY server server
COPY client_sdk client_sdk
COPY web web
COPY nginx nginx
# The server and the client distribution it depends on (delineate_protocol), from the lock.
RUN /opt/venv/bin/pip install -c constraints.txt ./client_sdk .

FROM python:3.11.11-slim
RUN useradd --create-home --uid 10001 delineate && mkdir /data && chown delineate /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data
USER delineate
EXPOSE 3000
# Liveness (/livez: the process answers), not /health or /readyz: a Redis or S3 outage must
# take replicas out of rotation, not get every one of them restarted.
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/livez', timeout=3).status != 200)"]
# SIGTERM: uvicorn stops accepting, running jobs go back to the queue for another replica.
STOPSIGNAL SIGTERM
# `delineate serve` runs uvicorn with WebSocket pings, no permessage-deflate and a bounded
# inbound message size (all settings).
CMD ["delineate", "serve"]
