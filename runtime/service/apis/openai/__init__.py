"""The openai API: wire.py (request and reply shapes), routes.py (thin handlers)."""
