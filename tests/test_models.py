"""GET /v1/models and /v1/models/<id>, with and without the /v1 prefix (in-process; the SDK on the real server)."""

import pytest


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_model_list(app_client, prefix):
    response = app_client.get(prefix + "/models")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"  # Open WebUI needs exactly this
    data = response.get_json()
    assert data["object"] == "list"
    ids = [m["id"] for m in data["data"]]
    assert ids[:3] == ["gpt-stream", "openai-nostream", "Gauss2-37b-instruct-v1.0"]
    gauss = data["data"][2]
    assert gauss["object"] == "model" and gauss["name"] == "Gauss2 37B" and isinstance(gauss["created"], int)
    assert "name" not in data["data"][0]


def test_model_list_through_the_sdk(client):
    assert "Gauss2-37b-instruct-v1.0" in [m.id for m in client.models.list()]


@pytest.mark.parametrize("prefix", ["/v1", ""])
def test_one_model(app_client, prefix):
    response = app_client.get(prefix + "/models/Gauss2-37b-instruct-v1.0")
    assert response.status_code == 200 and response.get_json()["id"] == "Gauss2-37b-instruct-v1.0"


def test_unknown_model_is_404(app_client):
    response = app_client.get("/v1/models/nope")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "model_not_found"
