"""One package per client API: each a `wire.py` (its Structs, `to_turn`, events -> wire) and a
thin `routes.py`; the shared plumbing lives one level up (turn.py, transport.py, errors.py)."""
