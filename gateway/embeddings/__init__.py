"""The Embeddings format: the request schema and checking a backend's answer.

- `request_schema.py`  the request: `input` as a string, strings, token ids or lists of token ids
- `answers.py`         is a backend's answer an embeddings list; filling what a lax one left out

Nothing here talks to the network or to Flask: these are the shapes, checked and built.
"""
