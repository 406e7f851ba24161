"""The openai SDK for the test modules, imported where a test first uses it: `from tests.sdk import openai`.

Importing it costs 0.8 s of CPU, which collecting the suite would otherwise pay in each of the
pytest-xdist processes before any test runs (a third of collecting)."""

import importlib


class _ImportedOnFirstUse:
    def __getattr__(self, name):
        if name.startswith("_"):  # pytest looks for its own marks on every module attribute (_mock_name, ...)
            raise AttributeError(name)
        return getattr(importlib.import_module("openai"), name)


openai = _ImportedOnFirstUse()
