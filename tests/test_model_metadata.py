"""Manifest metadata reads as a typed ModelMetadata, leniently: a cache written by an older
version (unknown keys, a value of the wrong type) still serves, with one default per field."""

from __future__ import annotations

from runtime.store.metadata import ModelMetadata


def test_known_fields_are_typed_and_unknown_ones_ignored():
    info = ModelMetadata.read(
        {"task": "embeddings", "context_length": 512, "synthetic": True, "built_by": "0.0.1"}
    )
    assert (info.task, info.context_length, info.synthetic) == ("embeddings", 512, True)


def test_a_wrong_type_falls_back_to_its_default_and_keeps_the_rest(caplog):
    info = ModelMetadata.read({"task": "chat", "context_length": "lots", "family": "qwen2"})
    assert info.context_length is None and info.family == "qwen2"
    assert "context_length" in caplog.text


def test_an_empty_mapping_is_every_default():
    assert ModelMetadata.read({}) == ModelMetadata()
    assert ModelMetadata().task == "chat" and ModelMetadata().provider == "cpu"
