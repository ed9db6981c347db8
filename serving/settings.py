"""The one settings object: every knob of the service, from ``MNIST_SERVE_*`` or the CLI.

Defaults marked "measured" come from ``loadtest/bench.py`` on a 2-core machine;
the README's "Defaults, and why" section has the table they were read from.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Device = Literal["cpu", "cuda", "auto"]
GraphOptimization = Literal["disable", "basic", "extended", "all"]


def split_list(value: object) -> object:
    """A list setting's text, comma-separated (as one writes it in an environment) or a
    JSON list (as ``settings_as_environment`` writes it); anything else passes through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text.startswith("["):
        return [item.strip() for item in text.split(",") if item.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not a JSON list ({error}); or write it comma-separated") from error


# NoDecode: pydantic-settings would otherwise demand JSON of every list from the environment.
CommaSeparated = Annotated[list[str], NoDecode, BeforeValidator(split_list)]


class Settings(BaseSettings):
    """Configuration of one mnist-serve process (and of each of its workers)."""

    model_config = SettingsConfigDict(env_prefix="MNIST_SERVE_", extra="forbid")

    # Where and how to listen.
    models_dir: Path = Field(Path("models"), description="Model repository: <name>/<version>/")
    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 in containers")
    port: int = Field(8000, ge=0, le=65535, description="TCP port")
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    forwarded_allow_ips: CommaSeparated = Field(
        ["127.0.0.1", "::1"],  # uvicorn's own default
        description="Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (the "
        "access line's client): IP addresses and networks, comma-separated or a JSON list, "
        "or * for any peer (only where nothing but the proxy can reach the port)",
    )

    # ONNX Runtime.
    device: Device = Field("cpu", description="cpu, cuda (fails without a GPU), auto")
    intra_op_threads: int | None = Field(
        None, ge=1, description="ORT intra-op threads; default: usable CPUs / workers"
    )
    inter_op_threads: int = Field(1, ge=1, description="ORT inter-op threads")
    graph_optimization: GraphOptimization = Field("all", description="ORT graph optimisation")
    warmup: bool = Field(True, description="Run every batch bucket once before ready")
    inline_compute_max_ms: float | None = Field(
        None,
        ge=0,
        description="Batches measured at warm-up to run faster than this run on the event "
        "loop, not a thread; default 2 when a worker has one CPU (a hand-off overlaps "
        "nothing), else 0.2 (a hand-off costs ~0.1 ms) (measured)",
    )
    idle_inline_max_ms: float = Field(
        10.0,
        ge=0,
        description="While nothing else is in flight, a lone request predicted (from warm-up) "
        "to compute within this runs on the event loop, saving the thread hand-off "
        "(~0.5 ms measured); a request arriving meanwhile waits at most this long; 0: off",
    )

    # Dynamic batching.
    batching: bool = Field(True, description="Gather concurrent requests into one ORT call")
    max_batch_size: int = Field(64, ge=1, description="Images per ORT call (measured)")
    max_queue_delay_ms: float = Field(
        1.0, ge=0, description="Longest wait for batch-mates while the model is busy (measured)"
    )
    max_queue_size: int = Field(
        2048, ge=1, description="Images waiting per model before requests are refused"
    )
    overload_status_code: int = Field(503, description="Status for refusals: 503 or 429")

    # Limits on requests.
    request_timeout_s: float = Field(
        10.0, gt=0, description="Longest a request may wait and run; a header may ask less"
    )
    max_images_per_request: int = Field(1024, ge=1, description="Images in one request")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Largest request body")
    max_image_pixels: int = Field(
        25_000_000, ge=1, description="Largest decoded picture (decompression-bomb guard)"
    )

    # Picture decoding, before a request reaches the queue: a 25-MP PNG takes ~0.5 s of
    # one core and ~100 MB while it decodes (measured), a canvas drawing ~2 ms.
    decode_threads: int | None = Field(
        None, ge=1, description="Pictures decoded at once; default: usable CPUs / workers"
    )
    max_waiting_decodes: int = Field(
        16,
        ge=0,
        description="Requests with pictures waiting for a decode thread before more are refused "
        "(503/429); 16 25-MP pictures are ~4 s of decoding on 2 cores, within request_timeout_s",
    )

    # Lifecycle and failure policy.
    shutdown_grace_s: float = Field(30.0, ge=0, description="Time to drain on SIGTERM")
    liveness_stall_s: float = Field(
        60.0,
        ge=0,
        description="A batch running this long makes /v2/health/live answer 503, so that an "
        "orchestrator restarts the process (an ONNX Runtime call cannot be interrupted); "
        "past request_timeout_s the model is already not ready; 0: never",
    )
    skip_bad_models: bool = Field(
        False, description="Serve the good models when one fails to load, instead of exiting"
    )

    # Security.
    model_control: bool = Field(
        False,
        description="Allow POST /v2/repository/models/{m}/load|unload (Triton's explicit mode); "
        "one worker only",
    )
    api_key: SecretStr | None = Field(None, description="Require 'Authorization: Bearer <key>'")
    api_key_protects_metrics: bool = Field(False, description="Also require the key on /metrics")
    cors_allow_origins: CommaSeparated = Field(
        default_factory=list,
        description="Origins allowed by CORS, comma-separated or a JSON list; empty = CORS off",
    )

    # Logs.
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")
    access_log: bool = Field(True, description="One JSON line per request")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _are_addresses_or_networks(cls, entries: list[str]) -> list[str]:
        # uvicorn keeps any other entry as a literal that no peer's address ever equals,
        # so a host name, a typo or a "*" among others would silently trust nobody.
        if entries == ["*"]:
            return entries
        for entry in entries:
            try:
                if "/" in entry:
                    ipaddress.ip_network(entry)
                else:
                    ipaddress.ip_address(entry)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (10.0.0.0/8); host names are "
                    "not resolved, and * must stand alone"
                ) from None
        return entries

    @field_validator("overload_status_code")
    @classmethod
    def _is_an_overload_status(cls, status: int) -> int:
        if status not in (429, 503):
            raise ValueError(f"must be 503 or 429, got {status}")
        return status

    @field_validator("max_images_per_request")
    @classmethod
    def _requests_fit_in_the_queue(cls, limit: int, info: ValidationInfo) -> int:
        # A field validator, not a model one, so the error names a setting; max_queue_size
        # is declared above, so it is validated first (absent here if it was invalid).
        queue_size = info.data.get("max_queue_size")
        if queue_size is not None and limit > queue_size:
            raise ValueError(
                f"{limit} must not exceed max_queue_size ({queue_size}): "
                "such a request could never be queued"
            )
        return limit

    @field_validator("model_control")
    @classmethod
    def _model_control_has_one_worker(cls, is_allowed: bool, info: ValidationInfo) -> bool:
        # A load or unload reaches only the worker that took the request, so clients would
        # get each worker's own answer in turn (404, 200, 404...). workers is declared above.
        workers = info.data.get("workers")
        if is_allowed and workers is not None and workers > 1:
            raise ValueError(
                f"needs one worker, got workers ({workers}): a load or unload would reach only "
                "the worker that took the request; scale with replicas instead"
            )
        return is_allowed
