# syntax=docker/dockerfile:1
# mnist-serve, the serving image: ONNX Runtime on the CPU, no torch.
#
#   docker build -t mnist-serve .                     # the service (last stage, the default)
#   docker build -t mnist-serve-loadtest --target loadtest .   # Locust + the locustfile
#
# Configured entirely by MNIST_SERVE_* variables (serving/settings.py); the CMD is
# the same `mnist-serve` the integration tests start (tests.support.SERVE_COMMAND).

# --- builder: a virtualenv holding the package and its serving-only dependencies --------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the wheel needs: the training and loadtest packages stay out of this image.
COPY pyproject.toml README.md deploy/constraints.txt ./
COPY serving/ serving/
# The base dependencies are serving-only; the `train` extra (torch) is never named here.
# constraints.txt pins the versions the tests ran with (deploy/pin_constraints.py).
RUN pip install --no-cache-dir --constraint constraints.txt .

# --- loadtest: Locust workers and master for `docker compose --profile loadtest` --------
FROM builder AS loadtest

COPY loadtest/ loadtest/
RUN pip install --no-cache-dir --constraint constraints.txt ".[loadtest]" \
    && groupadd --system --gid 10001 mnist \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mnist
# The workers check every answer against ONNX Runtime run offline on the same model
# files (loadtest/expectations.py): the same models/ the serve stage bakes in.
COPY models/ models/
# Runs from /src; PYTHONPATH makes `loadtest` this source tree (with its fixture and
# thresholds.toml), not the copy pip installed into site-packages.
ENV PYTHONPATH=/src \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8089
CMD ["locust", "-f", "loadtest/locustfile.py", "--help"]

# --- serve: the runtime image (the default target) ---------------------------------------
FROM python:3.11-slim-bookworm AS serve

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 mnist \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mnist

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Baked in so the image serves on its own; mount ./models:/app/models:ro to swap them.
# Owned by root and read-only to the service user: the server never writes its models.
COPY models/ /app/models/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MNIST_SERVE_MODELS_DIR=/app/models \
    MNIST_SERVE_HOST=0.0.0.0 \
    MNIST_SERVE_PORT=8000 \
    MNIST_SERVE_WORKERS=1 \
    MNIST_SERVE_DEVICE=cpu

USER 10001:10001
EXPOSE 8000

# slim has no curl: the stdlib asks the readiness endpoint (non-2xx raises, exit 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MNIST_SERVE_PORT', '8000') + '/v2/health/ready', timeout=2)"]

CMD ["mnist-serve"]
