"""The Chat Completions format: the request schema, backend answers, and stream chunks.

Nothing here talks to the network or to Flask: these are the shapes, checked and built.
"""
