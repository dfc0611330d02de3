"""Per-family tool-call parsers on recorded outputs of each family's real format.

The recorded replies are the shapes the models' own chat templates and model cards show
(Qwen2.5/Qwen3 Hermes blocks, Mistral v0.3 and v11 `[TOOL_CALLS]`, Llama 3.1 JSON with
`parameters`, Phi-4-mini `<|tool_call|>` lists, DeepSeek-R1 `<think>`), plus malformed ones.
"""

from __future__ import annotations

import json

import pytest

from runtime.tools.formats import FORMATS, forced_format, tool_format
from runtime.tools.parsers import StreamParser, parse

QWEN25 = (
    "<tool_call>\n"
    '{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}\n'
    "</tool_call>\n"
    "<tool_call>\n"
    '{"name": "get_temperature_date", "arguments": {"location": "San Francisco, CA, USA", '
    '"date": "2024-10-01"}}\n'
    "</tool_call>"
)
QWEN3_THINKING = (
    "<think>\nThe user wants the weather in Paris. I should call get_weather.\n</think>\n\n"
    "I'll look that up.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
    "</tool_call>"
)
# DeepSeek-R1 distills: the generation prompt already ends with "<think>\n".
R1_DISTILL = (
    "Okay, the user asks for 2+3. I can use the add tool.\n</think>\n\n"
    '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
)
MISTRAL_V03 = (
    '[TOOL_CALLS] [{"name": "get_current_weather", "arguments": {"location": "Paris, France", '
    '"format": "celsius"}}]'
)
MISTRAL_V11 = '[TOOL_CALLS]get_current_weather[ARGS]{"location": "Paris, France"}'
MISTRAL_V13_ID = '[TOOL_CALLS]get_current_weather[CALL_ID]a1b2C3d4E[ARGS]{"location": "Paris"}'
LLAMA31 = '{"name": "get_current_conditions", "parameters": {"location": "San Francisco, CA", "unit": "Fahrenheit"}}'
LLAMA31_TAGGED = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}'
PHI4_MINI = (
    '<|tool_call|>[{"name": "add", "arguments": {"x": 123345432, "y": 4563464236}}, '
    '{"name": "mul", "arguments": {"x": 874284, "y": 912429}}]<|/tool_call|>'
)
PHI4_FUNCTOOLS = (
    'functools[{"name": "get_match_result", "arguments": {"match": "Arsenal vs ManCity"}}]'
)

RECORDED = [
    (
        "qwen",
        QWEN25,
        False,
        None,
        [
            ("get_current_temperature", {"location": "San Francisco, CA, USA"}),
            ("get_temperature_date", {"location": "San Francisco, CA, USA", "date": "2024-10-01"}),
        ],
    ),
    (
        "qwen",
        QWEN3_THINKING,
        False,
        "I'll look that up.",
        [
            ("get_weather", {"city": "Paris", "unit": "celsius"}),
        ],
    ),
    ("qwen", R1_DISTILL, True, None, [("add", {"a": 2, "b": 3})]),
    (
        "mistral",
        MISTRAL_V03,
        False,
        None,
        [
            ("get_current_weather", {"location": "Paris, France", "format": "celsius"}),
        ],
    ),
    ("mistral", MISTRAL_V11, False, None, [("get_current_weather", {"location": "Paris, France"})]),
    ("mistral", MISTRAL_V13_ID, False, None, [("get_current_weather", {"location": "Paris"})]),
    (
        "llama3",
        LLAMA31,
        False,
        None,
        [
            ("get_current_conditions", {"location": "San Francisco, CA", "unit": "Fahrenheit"}),
        ],
    ),
    ("llama3", LLAMA31_TAGGED, False, None, [("get_weather", {"city": "Oslo"})]),
    (
        "phi4",
        PHI4_MINI,
        False,
        None,
        [
            ("add", {"x": 123345432, "y": 4563464236}),
            ("mul", {"x": 874284, "y": 912429}),
        ],
    ),
    ("phi4", PHI4_FUNCTOOLS, False, None, [("get_match_result", {"match": "Arsenal vs ManCity"})]),
]
RECORDED_IDS = [
    "qwen2.5",
    "qwen3-think",
    "r1-distill",
    "mistral-v0.3",
    "mistral-v11",
    "mistral-call-id",
    "llama3.1",
    "llama3.1-python-tag",
    "phi4-mini",
    "phi4-functools",
]

MALFORMED = [
    ("qwen", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par'),
    ("qwen", "<tool_call>\nnot json at all\n</tool_call>"),
    ("qwen", '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>'),
    ("mistral", "[TOOL_CALLS] this is not a list"),
    ("mistral", "[TOOL_CALLS]get weather[ARGS]{}"),
    ("llama3", '{"name": "get_weather", "parameters": {"city": }}'),
    ("llama3", '{"city": "Paris"}'),
    ("phi4", '<|tool_call|>[{"name": "add", "arguments": {"x": 1,]<|/tool_call|>'),
    ("phi4", "[1] is a citation, not a call"),
]


def _stream(parser_name: str, text: str, step: int, in_reasoning: bool = False):
    stream = StreamParser(tool_format(parser_name), in_reasoning=in_reasoning)
    deltas = []
    for i in range(0, len(text), step):
        deltas += stream.feed(text[i : i + step])
    deltas += stream.finish()
    return deltas


@pytest.mark.parametrize(
    ("family", "text", "in_reasoning", "content", "calls"), RECORDED, ids=RECORDED_IDS
)
def test_each_family_reply_becomes_openai_tool_calls(family, text, in_reasoning, content, calls):
    parsed = parse(text, tool_format(family), in_reasoning=in_reasoning)
    assert parsed.content == content
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == calls
    assert len({c.id for c in parsed.tool_calls}) == len(calls)


@pytest.mark.parametrize(
    ("family", "text", "in_reasoning", "content", "calls"), RECORDED, ids=RECORDED_IDS
)
@pytest.mark.parametrize("step", [1, 4, 13])
def test_streamed_deltas_name_first_then_arguments_that_concatenate(
    family, text, in_reasoning, content, calls, step
):
    deltas = _stream(family, text, step, in_reasoning)
    seen: dict[int, dict] = {}
    for delta in deltas:
        if delta.index is None:
            continue
        if delta.index not in seen:
            assert delta.id and delta.name, "the first delta of a call carries its id and name"
            seen[delta.index] = {"name": delta.name, "arguments": ""}
        else:
            assert delta.name is None and delta.id is None
        seen[delta.index]["arguments"] += delta.arguments or ""
    final = parse(text, tool_format(family), in_reasoning=in_reasoning)
    assert [(c["name"], c["arguments"]) for c in seen.values()] == [
        (c.name, c.arguments) for c in final.tool_calls
    ]
    assert ("".join(d.content or "" for d in deltas) or None) == content


def test_thinking_is_reasoning_content_and_never_content():
    parsed = parse(QWEN3_THINKING, tool_format("qwen"))
    assert parsed.reasoning == "The user wants the weather in Paris. I should call get_weather."
    assert "<think>" not in (parsed.content or "") and "</think>" not in (parsed.content or "")
    deltas = _stream("qwen", QWEN3_THINKING, 2)
    assert "".join(d.reasoning or "" for d in deltas) == parsed.reasoning
    assert all("think>" not in (d.content or "") for d in deltas)


def test_r1_reply_without_opening_tag_is_reasoning_until_the_closing_tag():
    parsed = parse(
        "Let me think.\n</think>\n\nThe answer is 5.", tool_format("none"), in_reasoning=True
    )
    assert (parsed.reasoning, parsed.content) == ("Let me think.", "The answer is 5.")


def test_unclosed_thinking_stays_reasoning():
    parsed = parse("<think>\nstill thinking when max_tokens hit", tool_format("qwen"))
    assert parsed.reasoning == "still thinking when max_tokens hit" and parsed.content is None


@pytest.mark.parametrize(
    ("family", "text"), MALFORMED, ids=[f"{f}-{i}" for i, (f, _) in enumerate(MALFORMED)]
)
def test_malformed_tool_syntax_comes_back_as_plain_content(family, text):
    parsed = parse(text, tool_format(family))
    assert parsed.tool_calls == []
    assert parsed.content == text.strip()


@pytest.mark.parametrize(
    ("family", "text"), MALFORMED, ids=[f"{f}-{i}" for i, (f, _) in enumerate(MALFORMED)]
)
def test_streaming_malformed_output_never_raises(family, text):
    for step in (1, 5):
        _stream(family, text, step)


def test_plain_answers_stream_unchanged_and_markers_are_held_back_not_leaked():
    text = "The weather in Paris is sunny. <tool_"
    deltas = _stream("qwen", text, 1)
    assert "".join(d.content or "" for d in deltas) == text
    sp = StreamParser(tool_format("qwen"))
    shown = "".join(d.content or "" for d in sp.feed("Sure <tool_c"))
    assert shown == "Sure"  # "<tool_c" may be the start of a call
    shown += "".join(d.content or "" for d in sp.feed('all>\n{"name": "f", "arguments": {}}'))
    assert shown == "Sure" and sp.has_tool_calls


def test_mistral_call_ids_fit_mistral_templates():
    parsed = parse(MISTRAL_V03, tool_format("mistral"))
    assert all(len(c.id) == 9 and c.id.isalnum() for c in parsed.tool_calls)


def test_special_token_markers_dropped_by_the_decoder_still_parse():
    # onnxruntime-genai's decoder skips special tokens, so <|tool_call|> / [TOOL_CALLS] vanish.
    assert parse('[{"name": "add", "arguments": {"x": 1}}]', tool_format("phi4")).tool_calls
    assert parse(' [{"name": "f", "arguments": {}}]', tool_format("mistral")).tool_calls
    assert parse('\n{"name": "f", "arguments": {}}\n', tool_format("qwen")).tool_calls


def test_unknown_parser_names_mean_no_tool_syntax():
    parsed = parse(QWEN25, tool_format("no-such-family"))
    assert parsed.tool_calls == [] and parsed.content == QWEN25


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_forced_call_framed_by_each_format_parses_back_as_that_call(name):
    syntax = forced_format(name)  # what grammar.tool_call_guidance frames a forced call with
    call = {"name": "add", syntax.arg_keys[0]: {"x": 1}}
    before, after = syntax.frame
    text = before + json.dumps([call] if syntax.as_list else call) + after
    parsed = parse(text, syntax)
    assert parsed.content is None
    assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == [("add", {"x": 1})]


@pytest.mark.parametrize("family", sorted(FORMATS))
def test_every_truncation_and_random_garbage_parses_without_raising(family):
    import random

    rng = random.Random(8)
    alphabet = '{}[]":,<>|/_ \\nabcTOLS01' + "\u00e9"
    samples = [text[:cut] for _, text, *_ in RECORDED for cut in range(0, len(text) + 1, 3)]
    samples += [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60))) for _ in range(300)
    ]
    for sample in samples:
        parsed = parse(sample, tool_format(family))
        assert (
            parsed.tool_calls
            or parsed.content is not None
            or parsed.reasoning is not None
            or not sample.strip()
        )
        stream = StreamParser(tool_format(family))
        for i in range(0, len(sample), 2):
            stream.feed(sample[i : i + 2])
        stream.finish()
