"""Recipes are data: every file loads, the schema is fresh, a pick is a lookup with clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import msgspec
import pytest

from compiler.recipe import load_recipe, load_recipes, pick, recipes_dir, schema_json
from runtime.errors import RecipeError, RecipeNotFound, UnknownTarget

FOUNDRY_BUILD = str(Path(sys.executable).parent / "foundry-build")
DECODERS = {
    "Qwen2ForCausalLM": "qwen",
    "Qwen3ForCausalLM": "qwen",
    "LlamaForCausalLM": "llama3",
    "MistralForCausalLM": "mistral",
    "Phi3ForCausalLM": "phi4",
}
TARGETS = {"cpu-int4", "cpu-int8", "cpu-fp32", "cuda-int4", "cuda-fp16", "dml-int4", "webgpu-int4"}


def test_recipe_schema_file_matches_the_recipe_struct() -> None:
    on_disk = (recipes_dir() / "recipe.schema.json").read_bytes()
    assert on_disk == schema_json(), (
        "recipes/recipe.schema.json is stale; regenerate: "
        'python -c "import compiler.recipe as r; r.write_schema()"'
    )


def test_every_recipe_file_loads_and_passes_the_json_schema() -> None:
    schema = json.loads((recipes_dir() / "recipe.schema.json").read_text())
    files = sorted(recipes_dir().glob("*.yaml"))
    assert len(load_recipes()) == len(files) >= 5
    for path in files:
        jsonschema.validate(msgspec.yaml.decode(path.read_bytes()), schema)


@pytest.mark.parametrize("architecture", sorted(DECODERS))
def test_each_decoder_family_has_every_target_and_its_tool_parser(architecture: str) -> None:
    recipe, _, target = pick({"architectures": [architecture]}, "chat", "cpu-int4")
    assert set(recipe.recipe.targets) >= TARGETS
    assert recipe.recipe.tool_parser == DECODERS[architecture]
    assert target.backend == "olive" and target.options["builder"]["prune_lm_head"] is True


def test_unsupported_architecture_lists_the_supported_ones() -> None:
    with pytest.raises(RecipeNotFound) as caught:
        pick({"architectures": ["GPT2LMHeadModel"]}, None, "cpu-int4")
    message = str(caught.value)
    assert "GPT2LMHeadModel" in message
    assert all(arch in message for arch in DECODERS)


def test_unknown_target_lists_the_recipe_targets() -> None:
    with pytest.raises(UnknownTarget) as caught:
        pick({"architectures": ["Qwen2ForCausalLM"]}, None, "tpu-int3")
    assert "tpu-int3" in str(caught.value)
    assert all(name in str(caught.value) for name in TARGETS)


def test_a_typo_in_a_recipe_names_the_file_and_the_field(tmp_path: Path) -> None:
    text = (
        (recipes_dir() / "qwen2.yaml").read_text().replace("precision: int4", "precison: int4", 1)
    )
    bad = tmp_path / "broken.yaml"
    bad.write_text(text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(bad)
    assert "broken.yaml" in str(caught.value)
    assert "precison" in str(caught.value) and "$.targets.cpu-int4" in str(caught.value)


def test_a_wrong_type_in_a_recipe_names_the_path(tmp_path: Path) -> None:
    text = (recipes_dir() / "qwen2.yaml").read_text().replace("steps: 32", "steps: many")
    bad = tmp_path / "wrongtype.yaml"
    bad.write_text(text)
    with pytest.raises(
        RecipeError,
        match=r"wrongtype\.yaml: Expected `int`, got `str` - at `\$\.validation\.steps`",
    ):
        load_recipe(bad)


def test_recipes_command_lists_families_tasks_and_targets_as_json() -> None:
    done = subprocess.run(
        [FOUNDRY_BUILD, "recipes", "--json"], capture_output=True, text=True, check=True
    )
    rows = {r["name"]: r for r in json.loads(done.stdout)["recipes"]}
    assert {"qwen2", "qwen3", "llama", "mistral", "phi3"} <= set(rows)
    assert set(rows["phi3"]["targets"]) >= TARGETS
    assert rows["qwen2"]["task"] == "chat" and rows["qwen2"]["architectures"] == [
        "Qwen2ForCausalLM"
    ]
