"""HEAD is answered wherever GET is: the GET's status and headers, no body."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings


@pytest.fixture
def client(tiny_repo: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_repo))) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "path", ["/v2/health/ready", "/v2/health/live", "/v2", "/v2/models/tiny", "/v1/models", "/"]
)
def test_head_answers_as_get_without_the_body(client: TestClient, path: str) -> None:
    got = client.get(path)
    head = client.head(path)

    assert got.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]


def test_head_of_a_not_ready_server_is_503_as_its_get(client: TestClient) -> None:
    client.app.state.server.is_draining = True

    assert client.head("/v2/health/ready").status_code == 503


def test_head_of_an_inference_route_is_a_405_naming_post(client: TestClient) -> None:
    response = client.head("/v2/models/tiny/infer")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_the_access_log_records_a_head_as_a_head(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="mnist_serve.access"):
        client.head("/v1/models")

    fields = [record.fields for record in caplog.records if record.name == "mnist_serve.access"]
    assert [(line["method"], line["path"], line["status"]) for line in fields] == [
        ("HEAD", "/v1/models", 200)
    ]
