"""The ollama API: wire.py (request and reply shapes), routes.py (thin handlers)."""
