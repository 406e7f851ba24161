"""llm-gateway: Open WebUI and the openai SDK in front of in-house LLM endpoints."""

__version__ = "0.1.0"
