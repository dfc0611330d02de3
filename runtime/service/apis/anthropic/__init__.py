"""The anthropic API: wire.py (request and reply shapes), routes.py (thin handlers)."""
