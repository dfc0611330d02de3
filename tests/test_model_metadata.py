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


def test_validation_records_read_by_their_kind_and_untagged_old_ones_still_classify():
    from runtime.store.validation import Fp32Exact, Quantized, Skipped, read_validation

    old_fp32 = {
        "engine": "onnxruntime-genai",
        "prompt_tokens": 5,
        "steps": 32,
        "matched_tokens": 32,
        "token_agreement": 1.0,
        "first_divergence": None,
        "max_abs_logit_diff": 1e-5,
        "exact": True,
        "distinct_reference_tokens": 9,
        "required": "exact",
        "runnable": True,
    }
    assert isinstance(read_validation(old_fp32), Fp32Exact)
    old_int4 = {"engine": "e", "generated_tokens": 8, "quality": {"top1": 0.9}, "floor": None,
                "required": "report", "runnable": True}  # fmt: skip
    assert isinstance(read_validation(old_int4), Quantized)
    assert read_validation({"skipped": "no qnn here"}) == Skipped(skipped="no qnn here")
    assert read_validation({"kind": "from-a-later-version"}) is None
    assert read_validation(None) is None


def test_thinks_is_decided_from_the_chat_template_when_the_folder_is_read(tmp_path):
    import json

    from runtime.artifact import infer_metadata

    for name, template in (("r1", "{{ '<think>' }}{{ m }}{{ '</think>' }}"), ("plain", "{{ m }}")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "genai_config.json").write_text(json.dumps({"model": {"type": "qwen3"}}))
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
        assert infer_metadata(folder).thinks is (name == "r1")
    assert ModelMetadata.read({"task": "chat"}).thinks is None  # older manifests: scan at load


def test_a_manifest_from_before_thinks_gets_it_from_the_template_the_chat_engine_loads(
    genai_artifact, tmp_path
):
    """The service reads `engine.metadata.thinks` only; for an older manifest (None) the chat
    engine decides it from its template at load, and a kept value is never second-guessed."""
    import json
    import shutil

    from runtime.engines.chat import ChatEngine

    plain = genai_artifact("qwen2.5-0.5b")
    r1 = tmp_path / "r1"
    shutil.copytree(plain, r1)
    config = json.loads((r1 / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m.content }}{% endfor %}<think></think>"
    (r1 / "tokenizer_config.json").write_text(json.dumps(config))
    old = ModelMetadata.read({"task": "chat"})
    seen = []
    for folder, metadata in ((plain, old), (r1, old), (r1, ModelMetadata(thinks=False))):
        engine = ChatEngine(folder, metadata, model_id=folder.name)
        try:
            seen.append(engine.metadata.thinks)
        finally:
            engine.close()
    assert seen == [False, True, False]
