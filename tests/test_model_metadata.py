"""Manifest metadata reads as a typed ModelMetadata, leniently: a cache written by an older
version (unknown keys, a value of the wrong type) still serves, with one default per field."""

from __future__ import annotations

from runtime.store import Store
from runtime.store.metadata import METADATA_VERSION, ModelMetadata


def test_known_fields_are_typed_and_unknown_ones_ignored():
    info = ModelMetadata.read(
        {"task": "embeddings", "context_length": 512, "synthetic": True, "built_by": "0.0.1"}
    )
    assert (info.task, info.context_length, info.synthetic) == ("embeddings", 512, True)


def test_a_wrong_type_falls_back_to_its_default_and_keeps_the_rest(caplog):
    info = ModelMetadata.read({"task": "chat", "context_length": "lots", "family": "qwen2"})
    assert info.context_length is None and info.family == "qwen2"
    assert "context_length" in caplog.text


def test_an_empty_mapping_is_every_default_from_before_versions():
    assert ModelMetadata.read({}) == ModelMetadata(version=0)
    assert ModelMetadata().task == "chat" and ModelMetadata().provider == "cpu"


def test_a_registered_model_keeps_the_one_written_shape_and_reads_it_back(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"weights")
    written = ModelMetadata(task="embeddings", family="bert", context_length=512, runnable=False)
    model = Store(tmp_path / "cache").register(folder, model_id="m", metadata=written)
    again = Store(tmp_path / "cache").resolve("m")
    assert again.metadata["version"] == METADATA_VERSION and again.metadata["task"] == "embeddings"
    assert again.info == written == model.info
