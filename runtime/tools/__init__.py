"""Tool calling and constrained decoding: per-family output parsers, guidance grammars."""
