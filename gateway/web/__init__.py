"""The Flask side: blueprints, and what every request passes through.

- `api.py`             blueprint: /chat/completions, /models (served with and without /v1)
- `embeddings.py`      blueprint: /embeddings (served with and without /v1)
- `responses_api.py`   blueprint: /responses, GET and DELETE /responses/<id> (the Responses API)
- `status.py`          blueprint: /, /status.json, /metrics, /healthz, /readyz
- `access.py`          inbound API keys and CORS
- `error_handlers.py`  the one place a failure becomes an OpenAI-shaped response
- `routing.py`         from a validated request to its failover Attempts (chat, embeddings, responses)
- `request_body.py`    reading the client's body: in time, within the limit, strict JSON
- `responses.py`       JSON and SSE responses, and the registry a view works with
"""
