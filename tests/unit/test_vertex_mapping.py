"""The OpenAI <-> Vertex AI (Gemini) translation of the ``vertex-express`` provider.

Every Gemini request body produced here goes through ``validate_gemini_request`` (google-genai's
own pydantic types, strict, plus Vertex's server-side rules); every OpenAI answer through the
``openai`` SDK's types.
"""

from __future__ import annotations

import copy
import enum
import json
import re
from typing import Any, Literal

import httpx
import pydantic
import pytest
from google.genai import types as gtypes
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from vte_proxy.errors import GatewayError, UpstreamError
from vte_proxy.providers.vertex_mapping import (
    GeminiStreamTranslator,
    chat_to_gemini,
    clean_schema,
    gemini_error,
    gemini_to_chat,
    gemini_usage,
    new_tool_call_id,
    thought_signature_from_id,
)

try:
    from tests.vertex_upstream import USAGE, VertexUpstream, function_call_response, text_event, text_response
    from tests.vertex_wire import GeminiRequestError, validate_gemini_request
except ImportError:  # tests/ itself on sys.path (pytest's default rootdir-less import mode)
    from vertex_upstream import (  # type: ignore[no-redef]
        USAGE,
        VertexUpstream,
        function_call_response,
        text_event,
        text_response,
    )
    from vertex_wire import GeminiRequestError, validate_gemini_request  # type: ignore[no-redef]

ID_RE = re.compile(r"call_[A-Za-z0-9]{24}")
SIG = "CiQBVKh0a+Om/x9z8Qk1Pn3+tP8yB2w/aGVsbG8gd29ybGQ="  # standard base64 with '+', '/' and '='
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """chat_to_gemini + strict wire validation + a check that the input is left untouched."""
    before = copy.deepcopy(body)
    out = chat_to_gemini(body)
    assert body == before, "chat_to_gemini mutated its input"
    validate_gemini_request(out)
    return out


def rejected(body: dict[str, Any]) -> str:
    with pytest.raises(GatewayError) as info:
        chat_to_gemini(body)
    assert info.value.status == 400
    return info.value.message


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gemini", "messages": list(messages), **extra}


def assistant_call(call_id: str, name: str, arguments: str = "{}", content: Any = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}


def tool(call_id: str, content: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


# --- messages -----------------------------------------------------------------------------

def test_user_string_message_becomes_one_user_content():
    assert to_gemini(chat(user("hello"))) == {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


def test_system_and_developer_messages_become_system_instruction_parts():
    out = to_gemini(chat({"role": "system", "content": "be brief"},
                         {"role": "developer", "content": [{"type": "text", "text": "use French"}]},
                         user("hi")))
    assert out["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "use French"}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_system_message_in_the_middle_is_hoisted_to_system_instruction():
    out = to_gemini(chat(user("a"), {"role": "system", "content": "late rule"}, user("b")))
    assert out["systemInstruction"] == {"parts": [{"text": "late rule"}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}]


def test_assistant_maps_to_model_and_consecutive_same_role_turns_merge():
    out = to_gemini(chat(user("a"), user("b"), {"role": "assistant", "content": "c"},
                         {"role": "assistant", "content": "d"}, user("e")))
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
        {"role": "user", "parts": [{"text": "e"}]},
    ]


def test_empty_texts_are_dropped_so_vertex_never_sees_an_empty_text_part():
    out = to_gemini(chat(user("q"), {"role": "assistant", "content": ""}, user([{"type": "text", "text": ""},
                                                                              {"type": "text", "text": "x"}])))
    assert out["contents"] == [{"role": "user", "parts": [{"text": "q"}, {"text": "x"}]}]


def test_assistant_refusal_part_is_kept_as_text():
    out = to_gemini(chat(user("q"), {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
                         user("why")))
    assert out["contents"][1] == {"role": "model", "parts": [{"text": "no"}]}


def test_only_system_messages_is_rejected():
    assert "at least one user or assistant" in rejected(chat({"role": "system", "content": "x"}))


def test_image_data_url_becomes_inline_data_with_payload_as_is():
    out = to_gemini(chat(user([{"type": "text", "text": "what is it?"},
                               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}",
                                                                   "detail": "high"}}])))
    assert out["contents"][0]["parts"] == [{"text": "what is it?"},
                                           {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]


@pytest.mark.parametrize(("url", "mime"), [
    ("https://example.com/cat.png", "image/png"),
    ("https://example.com/a/photo.JPG?size=large#frag", "image/jpeg"),
    ("gs://bucket/dir/pic.webp", "image/webp"),
    ("gs://bucket/doc.pdf", "application/pdf"),
    ("https://example.com/image", "image/jpeg"),
    ("https://example.com/v1.2/render", "image/jpeg"),
])
def test_https_and_gs_urls_become_file_data_with_mime_from_extension(url: str, mime: str):
    out = to_gemini(chat(user([{"type": "image_url", "image_url": {"url": url}}])))
    assert out["contents"][0]["parts"] == [{"fileData": {"mimeType": mime, "fileUri": url}}]


def test_image_url_given_as_plain_string_is_accepted():
    out = to_gemini(chat(user([{"type": "image_url", "image_url": "gs://b/x.gif"}])))
    assert out["contents"][0]["parts"] == [{"fileData": {"mimeType": "image/gif", "fileUri": "gs://b/x.gif"}}]


@pytest.mark.parametrize("url", ["http://example.com/a.png", "ftp://x/y.png", "data:image/png,notbase64",
                                 "data:image/png;base64,", ""])
def test_unsupported_or_malformed_image_urls_are_rejected(url: str):
    assert "image_url" in rejected(chat(user([{"type": "image_url", "image_url": {"url": url}}])))


def test_input_audio_becomes_inline_data_with_audio_mime():
    out = to_gemini(chat(user([{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}])))
    assert out["contents"][0]["parts"] == [{"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}]


def test_input_audio_with_unknown_format_is_rejected():
    assert "input_audio" in rejected(chat(user([{"type": "input_audio",
                                                 "input_audio": {"data": "AAAA", "format": "midi"}}])))


def test_file_parts_map_to_inline_or_file_data():
    out = to_gemini(chat(user([
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "notes.txt"}},
        {"type": "file", "file": {"file_id": "gs://bucket/report.pdf"}},
    ])))
    assert out["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"inlineData": {"mimeType": "text/plain", "data": "JVBERi0="}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "gs://bucket/report.pdf"}},
    ]


def test_uploaded_file_id_is_rejected_clearly():
    assert "file ids are not supported" in rejected(chat(user([{"type": "file", "file": {"file_id": "file-abc"}}])))


def test_unknown_content_part_type_is_rejected_naming_the_part():
    message = rejected(chat(user([{"type": "text", "text": "a"}, {"type": "video", "video": {}}])))
    assert "messages[0].content[1]" in message and "video" in message


# --- tool calls, tool results, thought signatures ------------------------------------------

def test_assistant_tool_calls_become_function_call_parts_and_tool_messages_function_responses():
    out = to_gemini(chat(
        user("weather in Paris and Rome?"),
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        tool("call_1", '{"temp": 21}'),
        tool("call_2", "sunny, 25C"),
        tools=[WEATHER_TOOL]))
    assert out["contents"][1] == {"role": "model", "parts": [
        {"text": "Let me check."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
    ]}
    assert out["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "get_weather", "response": {"content": "sunny, 25C"}}},
    ]}


def test_tool_result_that_is_json_but_not_an_object_is_wrapped_as_content():
    out = to_gemini(chat(user("q"), assistant_call("c1", "f"), tool("c1", "[1, 2]")))
    assert out["contents"][2]["parts"] == [{"functionResponse": {"name": "f", "response": {"content": "[1, 2]"}}}]


def test_tool_result_given_as_text_parts_is_joined():
    out = to_gemini(chat(user("q"), assistant_call("c1", "f"),
                         tool("c1", [{"type": "text", "text": '{"a":'}, {"type": "text", "text": " 1}"}])))
    assert out["contents"][2]["parts"] == [{"functionResponse": {"name": "f", "response": {"a": 1}}}]


def test_tool_results_followed_by_user_text_share_the_user_turn():
    out = to_gemini(chat(user("q"), assistant_call("c1", "f"), tool("c1", "ok"), user("thanks, and now?")))
    assert out["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {"content": "ok"}}}, {"text": "thanks, and now?"}]}


def test_empty_and_object_arguments_are_accepted():
    out = to_gemini(chat(user("q"), {"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"x": 1}}}]},
        tool("a", "1"), tool("b", "2")))
    assert [p["functionCall"]["args"] for p in out["contents"][1]["parts"]] == [{}, {"x": 1}]


@pytest.mark.parametrize("arguments", ['{"city": ', "[1, 2]", '"just a string"'])
def test_tool_call_arguments_that_are_not_a_json_object_are_rejected(arguments: str):
    message = rejected(chat(user("q"), assistant_call("c1", "f", arguments), tool("c1", "x")))
    assert "messages[1].tool_calls[0].function.arguments" in message


def test_tool_message_with_unknown_id_is_rejected():
    assert "tool_call_id" in rejected(chat(user("q"), assistant_call("c1", "f"), tool("nope", "x")))


def test_unanswered_tool_call_is_rejected():
    message = rejected(chat(user("q"), assistant_call("c1", "f"), user("never mind")))
    assert "c1" in message and "no tool message" in message


def test_tool_call_answered_twice_is_rejected():
    assert "already answered" in rejected(chat(user("q"), assistant_call("c1", "f"), tool("c1", "a"),
                                               tool("c1", "b")))


def test_tool_call_without_id_is_rejected():
    assert "tool_calls[0]" in rejected(chat(user("q"), {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}))


def test_tool_call_id_scheme_is_call_plus_24_alphanumerics():
    plain = new_tool_call_id()
    assert ID_RE.fullmatch(plain)
    assert thought_signature_from_id(plain) is None
    assert len({new_tool_call_id() for _ in range(100)}) == 100


def test_thought_signature_round_trips_through_the_tool_call_id():
    call_id = new_tool_call_id(SIG)
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}__ts__[A-Za-z0-9_-]+", call_id)
    assert thought_signature_from_id(call_id) == SIG
    assert thought_signature_from_id(new_tool_call_id("YWJj")) == "YWJj"


@pytest.mark.parametrize("foreign", ["call_abc__ts__xyz", "toolu_01A09q90qw90lq917835lq9", "call_1",
                                     "call_" + "a" * 24 + "__ts__bad+chars"])
def test_ids_not_made_by_the_scheme_carry_no_signature(foreign: str):
    assert thought_signature_from_id(foreign) is None
    out = to_gemini(chat(user("q"), assistant_call(foreign, "f"), tool(foreign, "x")))
    assert "thoughtSignature" not in out["contents"][1]["parts"][0]


def test_gemini3_thought_signature_comes_back_on_the_next_request():
    answer = gemini_to_chat(function_call_response("get_weather", {"city": "Paris"}, thought_signature=SIG),
                            "gemini-3", "chatcmpl-1", 1)
    # a client that keeps the id as an opaque string (the OpenAI SDK's own types) sends it back
    call = ChatCompletion.model_validate(answer).choices[0].message.tool_calls[0].model_dump()
    out = to_gemini(chat(user("weather?"), {"role": "assistant", "content": None, "tool_calls": [call]},
                         tool(call["id"], '{"temp": 20}'), tools=[WEATHER_TOOL]))
    part = out["contents"][1]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG}


def test_thought_signature_from_a_stream_comes_back_too():
    translator = GeminiStreamTranslator("gemini-3", "chatcmpl-2", 1)
    chunks = translator.feed(function_call_response("f", {}, thought_signature=SIG))
    call_id = chunks[0]["choices"][0]["delta"]["tool_calls"][0]["id"]
    out = to_gemini(chat(user("q"), assistant_call(call_id, "f"), tool(call_id, "done")))
    assert out["contents"][1]["parts"][0]["thoughtSignature"] == SIG


# --- tools and tool_choice ---------------------------------------------------------------

def test_function_tools_become_function_declarations():
    out = to_gemini(chat(user("q"), tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "now"}}]))
    assert out["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city",
         "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
        {"name": "now"},
    ]}]


def test_parameters_without_properties_are_omitted():
    out = to_gemini(chat(user("q"), tools=[{"type": "function", "function": {
        "name": "ping", "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}]))
    assert out["tools"] == [{"functionDeclarations": [{"name": "ping"}]}]


def test_strict_openai_schema_is_cleaned_of_keys_vertex_rejects():
    params = {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "title": "Args",
        "additionalProperties": False, "strict": True,
        "properties": {
            "when": {"type": "string", "format": "date-time", "title": "When", "examples": ["2025-01-01T00:00:00Z"]},
            "site": {"type": "string", "format": "uri", "default": "https://x", "minLength": 3},
            "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "minItems": 1,
                     "uniqueItems": True},
            "count": {"type": ["integer", "null"], "minimum": 0, "exclusiveMaximum": 10},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "level": {"type": "integer", "enum": [1, 2, 3], "description": "Level"},
            "mode": {"const": "fast"},
            "meta": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["when", "unit", "ghost"],
    }
    out = to_gemini(chat(user("q"), tools=[{"type": "function", "function": {
        "name": "plan", "strict": True, "parameters": params}}]))
    assert out["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "when": {"type": "STRING", "format": "date-time"},
            "site": {"type": "STRING", "minLength": 3},
            "tags": {"type": "ARRAY", "items": {"type": "STRING", "pattern": "^[a-z]+$"}, "minItems": 1},
            "count": {"type": "INTEGER", "nullable": True, "minimum": 0},
            "unit": {"type": "STRING", "enum": ["c", "f"]},
            "level": {"type": "INTEGER", "description": "Level Allowed values: 1, 2, 3."},
            "mode": {"type": "STRING", "enum": ["fast"]},
            "meta": {"type": "OBJECT"},
        },
        "required": ["when", "unit"],
    }


def test_refs_to_defs_are_inlined_and_any_of_null_becomes_nullable():
    schema = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                            "required": ["x", "y"]}},
        "definitions": {"Color": {"type": "string", "enum": ["red", "blue"]}},
        "properties": {
            "start": {"$ref": "#/$defs/Point", "description": "start point"},
            "path": {"type": "array", "items": {"$ref": "#/$defs/Point"}},
            "color": {"anyOf": [{"$ref": "#/definitions/Color"}, {"type": "null"}]},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": "s or i"},
            "maybe": {"type": ["string", "integer", "null"], "description": "m"},
            "both": {"allOf": [{"$ref": "#/$defs/Point"}, {"properties": {"z": {"type": "number"}}}]},
        },
    }
    point = {"type": "OBJECT", "properties": {"x": {"type": "NUMBER"}, "y": {"type": "NUMBER"}}, "required": ["x", "y"]}
    cleaned = clean_schema(schema, "s")
    assert cleaned["properties"] == {
        "start": {**point, "description": "start point"},
        "path": {"type": "ARRAY", "items": point},
        "color": {"type": "STRING", "enum": ["red", "blue"], "nullable": True},
        "either": {"anyOf": [{"description": "s or i", "type": "STRING"},
                             {"description": "s or i", "type": "INTEGER"}]},
        "maybe": {"anyOf": [{"description": "m", "nullable": True, "type": "STRING"},
                            {"description": "m", "nullable": True, "type": "INTEGER"}]},
        "both": {"type": "OBJECT", "properties": {**point["properties"], "z": {"type": "NUMBER"}},
                 "required": ["x", "y"]},
    }
    gtypes.Schema.model_validate(cleaned)
    to_gemini(chat(user("q"), tools=[{"type": "function", "function": {"name": "draw", "parameters": schema}}]))


class Shape(enum.Enum):
    CIRCLE = "circle"
    SQUARE = "square"


class Item(pydantic.BaseModel):
    name: str
    qty: int = 1
    shape: Shape | None = None


class Order(pydantic.BaseModel):
    """An order."""

    items: list[Item]
    priority: Literal["low", "high"] = "low"
    note: str | None = None
    billing: Item | None = None
    extra: dict[str, int] = {}


def test_pydantic_generated_schema_is_accepted_as_tool_parameters_and_response_schema():
    schema = Order.model_json_schema()
    out = to_gemini(chat(user("q"), tools=[{"type": "function", "function": {"name": "order", "parameters": schema}}],
                         response_format={"type": "json_schema", "json_schema": {"name": "Order", "schema": schema,
                                                                                 "strict": True}}))
    params = out["tools"][0]["functionDeclarations"][0]["parameters"]
    assert params["properties"]["items"]["items"]["properties"]["shape"] == {
        "type": "STRING", "enum": ["circle", "square"], "nullable": True}
    assert params["properties"]["billing"]["nullable"] is True
    assert params["properties"]["priority"] == {"type": "STRING", "enum": ["low", "high"]}
    assert out["generationConfig"]["responseSchema"] == params


def test_nested_any_of_with_null_keeps_any_of_the_only_field():
    cleaned = clean_schema({"description": "d", "anyOf": [
        {"type": "null"}, {"anyOf": [{"type": "string"}, {"type": "integer", "description": "own"}]}]}, "s")
    assert cleaned == {"anyOf": [{"description": "d", "nullable": True, "type": "STRING"},
                                 {"description": "own", "nullable": True, "type": "INTEGER"}]}


def test_recursive_ref_is_rejected():
    schema = {"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
              "type": "object", "properties": {"head": {"$ref": "#/$defs/Node"}}}
    assert "recursive $ref" in rejected(chat(user("q"), tools=[{"type": "function", "function": {
        "name": "walk", "parameters": schema}}]))


def test_remote_ref_is_rejected():
    message = rejected(chat(user("q"), tools=[{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "https://example.com/schema.json"}}}}}]))
    assert "tools[0].function.parameters.properties.a" in message and "$ref" in message


def test_non_object_parameters_are_rejected():
    assert "object schema" in rejected(chat(user("q"), tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "string"}}}]))


@pytest.mark.parametrize(("tools", "fragment"), [
    ([{"type": "web_search"}], "only tools of type 'function'"),
    ([{"type": "function", "function": {"name": "has space"}}], "function.name"),
    ([{"type": "function", "function": {"name": "9lives"}}], "function.name"),
    ([WEATHER_TOOL, WEATHER_TOOL], "duplicate function name"),
    ({"type": "function"}, "'tools' must be a list"),
])
def test_invalid_tools_are_rejected(tools: Any, fragment: str):
    assert fragment in rejected(chat(user("q"), tools=tools))


@pytest.mark.parametrize(("choice", "config"), [
    ("none", {"mode": "NONE"}),
    ("auto", {"mode": "AUTO"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_tool_choice_maps_to_function_calling_config(choice: Any, config: dict[str, Any]):
    out = to_gemini(chat(user("q"), tools=[WEATHER_TOOL], tool_choice=choice))
    assert out["toolConfig"] == {"functionCallingConfig": config}


def test_tool_choice_without_tools_is_dropped_unless_required():
    assert "toolConfig" not in to_gemini(chat(user("q"), tool_choice="auto"))
    assert "toolConfig" not in to_gemini(chat(user("q"), tool_choice="none"))
    assert "no tools" in rejected(chat(user("q"), tool_choice="required"))


@pytest.mark.parametrize("choice", ["sometimes", 3, {"type": "function", "function": {}},
                                    {"type": "function", "function": {"name": "other"}}])
def test_invalid_tool_choice_is_rejected(choice: Any):
    assert "tool_choice" in rejected(chat(user("q"), tools=[WEATHER_TOOL], tool_choice=choice))


# --- generationConfig ----------------------------------------------------------------------

def test_sampling_parameters_map_to_generation_config():
    out = to_gemini(chat(user("q"), temperature=0.2, top_p=0.9, top_k=40, max_tokens=100, stop="END", n=2,
                         seed=7, presence_penalty=0.5, frequency_penalty=-0.5))
    assert out["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 100,
                                       "stopSequences": ["END"], "candidateCount": 2, "seed": 7,
                                       "presencePenalty": 0.5, "frequencyPenalty": -0.5}


def test_max_completion_tokens_wins_over_max_tokens_and_stop_list_is_kept():
    out = to_gemini(chat(user("q"), max_tokens=10, max_completion_tokens=20, stop=["a", "b"]))
    assert out["generationConfig"] == {"maxOutputTokens": 20, "stopSequences": ["a", "b"]}


def test_penalty_of_two_is_clamped_into_vertex_half_open_range():
    out = to_gemini(chat(user("q"), presence_penalty=2, frequency_penalty=2.0))
    assert 1.999 < out["generationConfig"]["presencePenalty"] < 2
    assert 1.999 < out["generationConfig"]["frequencyPenalty"] < 2


def test_response_format_json_object_sets_json_mime_type():
    out = to_gemini(chat(user("q"), response_format={"type": "json_object"}))
    assert out["generationConfig"] == {"responseMimeType": "application/json"}


def test_response_format_json_schema_sets_mime_type_and_cleaned_schema():
    out = to_gemini(chat(user("q"), response_format={"type": "json_schema", "json_schema": {
        "name": "r", "strict": True, "schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}))
    assert out["generationConfig"] == {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"answer": {"type": "STRING"}}, "required": ["answer"]}}


def test_response_format_text_adds_nothing():
    assert "generationConfig" not in to_gemini(chat(user("q"), response_format={"type": "text"}))


@pytest.mark.parametrize(("effort", "budget"), [("none", 0), ("low", 1024), ("medium", 8192), ("high", 24576)])
def test_reasoning_effort_maps_to_thinking_budget(effort: str, budget: int):
    out = to_gemini(chat(user("q"), reasoning_effort=effort))
    assert out["generationConfig"] == {"thinkingConfig": {"thinkingBudget": budget}}


def test_harmless_openai_only_fields_are_ignored():
    plain = to_gemini(chat(user("q")))
    noisy = to_gemini(chat(user("q"), user="u-1", stream=True, stream_options={"include_usage": True},
                           metadata={"a": "b"}, store=False, logprobs=False, parallel_tool_calls=False,
                           service_tier="auto", logit_bias={}))
    assert noisy == plain


@pytest.mark.parametrize(("body", "fragment"), [
    (chat(user("q"), temperature="hot"), "'temperature' must be a number"),
    (chat(user("q"), temperature=True), "'temperature' must be a number"),
    (chat(user("q"), temperature=3), "'temperature' must be between"),
    (chat(user("q"), top_p=1.5), "'top_p'"),
    (chat(user("q"), top_k=0.5), "'top_k' must be an integer"),
    (chat(user("q"), max_tokens="10"), "'max_tokens' must be an integer"),
    (chat(user("q"), max_completion_tokens=0), "'max_completion_tokens'"),
    (chat(user("q"), n=0), "'n'"),
    (chat(user("q"), n=9), "'n'"),
    (chat(user("q"), seed=1.5), "'seed'"),
    (chat(user("q"), stop=[1]), "'stop'"),
    (chat(user("q"), stop=["a", "b", "c", "d", "e", "f"]), "'stop'"),
    (chat(user("q"), response_format={"type": "xml"}), "'response_format.type'"),
    (chat(user("q"), response_format={"type": "json_schema"}), "'response_format.json_schema'"),
    (chat(user("q"), reasoning_effort="extreme"), "'reasoning_effort'"),
    ({"model": "m", "messages": "hi"}, "'messages' must be a non-empty list"),
    ({"model": "m"}, "'messages' must be a non-empty list"),
    ({"model": "m", "messages": []}, "'messages' must be a non-empty list"),
    ({"model": "m", "messages": ["hi"]}, "messages[0] must be an object"),
    ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0].role is required"),
    ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role 'robot'"),
    ({"model": "m", "messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text"),
    ({"model": "m", "messages": [{"role": "system", "content": [{"type": "image_url"}]}, user("x")]},
     "messages[0].content[0]"),
])
def test_wrong_types_are_rejected_naming_the_field(body: dict[str, Any], fragment: str):
    assert fragment in rejected(body)


@pytest.mark.parametrize("extra", [
    {"functions": [{"name": "f"}]}, {"function_call": "auto"}, {"logprobs": True}, {"top_logprobs": 3},
    {"audio": {"voice": "alloy"}}, {"modalities": ["text", "audio"]}, {"logit_bias": {"50256": -100}},
    {"web_search_options": {}},
])
def test_unsupported_openai_features_are_rejected(extra: dict[str, Any]):
    assert "not supported" in rejected(chat(user("q"), **extra))


def test_non_dict_body_is_rejected():
    with pytest.raises(GatewayError) as info:
        chat_to_gemini([])  # type: ignore[arg-type]
    assert info.value.status == 400


# --- JSON Schema cleaning, property-based ------------------------------------------------------

_leaf = st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "number", "boolean"])}, optional={
    "description": st.text(max_size=5), "title": st.text(max_size=5), "format": st.sampled_from(
        ["date-time", "uri", "int32", "float", "email"]), "enum": st.lists(st.one_of(st.text(max_size=3),
                                                                                     st.integers()), max_size=3),
    "default": st.integers(), "minimum": st.integers(), "pattern": st.just("^a"), "nullable": st.booleans()})
_schemas = st.recursive(_leaf, lambda inner: st.one_of(
    st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(
        st.text(min_size=1, max_size=4), inner, max_size=3)}, optional={
        "additionalProperties": st.one_of(st.booleans(), inner), "required": st.lists(st.text(max_size=4))}),
    st.fixed_dictionaries({"type": st.just("array"), "items": inner}, optional={"minItems": st.integers(0, 3)}),
    st.fixed_dictionaries({"anyOf": st.lists(st.one_of(inner, st.just({"type": "null"})), min_size=1, max_size=3)},
                          optional={"description": st.text(max_size=3), "default": st.none(), "title": st.just("T")}),
    st.fixed_dictionaries({"oneOf": st.lists(inner, min_size=1, max_size=3), "description": st.text(max_size=3)}),
    st.fixed_dictionaries({"type": st.lists(st.sampled_from(["string", "integer", "null"]), min_size=1,
                                            max_size=3, unique=True)}),
), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=4), _schemas, min_size=1, max_size=3))
def test_any_generated_json_schema_cleans_to_a_valid_vertex_schema(properties: dict[str, Any]):
    out = to_gemini(chat(user("q"), tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": properties, "additionalProperties": False}}}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "properties": properties}}}))
    assert out["tools"][0]["functionDeclarations"][0]["parameters"]["type"] == "OBJECT"


# --- answers -------------------------------------------------------------------------------------

def answer(resp: dict[str, Any]) -> dict[str, Any]:
    gtypes.GenerateContentResponse.model_validate(resp)  # the fixture is a real Gemini answer
    out = gemini_to_chat(resp, "my-gemini", "chatcmpl-xyz", 1700000000)
    ChatCompletion.model_validate(out)
    return out


def test_text_answer_becomes_chat_completion():
    out = answer(text_response("Hello!", usage={"promptTokenCount": 10, "candidatesTokenCount": 2,
                                                "totalTokenCount": 12}))
    assert out == {
        "id": "chatcmpl-xyz", "object": "chat.completion", "created": 1700000000, "model": "my-gemini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!", "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
    }


def test_text_parts_are_concatenated_and_thoughts_exposed_as_reasoning_content():
    out = answer({"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Let me think...", "thought": True}, {"text": "Hel"}, {"text": "lo"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "thoughtsTokenCount": 30,
                          "cachedContentTokenCount": 3, "totalTokenCount": 36}})
    message = out["choices"][0]["message"]
    assert message["content"] == "Hello"
    assert message["reasoning_content"] == "Let me think..."
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 32, "total_tokens": 36,
                            "prompt_tokens_details": {"cached_tokens": 3},
                            "completion_tokens_details": {"reasoning_tokens": 30}}


def test_function_calls_become_tool_calls_with_generated_ids_and_compact_arguments():
    out = answer({"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Zürich", "days": [1, 2]}}},
        {"functionCall": {"name": "now"}}]}, "finishReason": "STOP"}]})
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"] for c in calls] == [{"name": "get_weather", "arguments": '{"city":"Zürich","days":[1,2]}'},
                                              {"name": "now", "arguments": "{}"}]
    assert all(ID_RE.fullmatch(c["id"]) and c["type"] == "function" for c in calls)
    assert calls[0]["id"] != calls[1]["id"]
    assert "usage" not in out


@pytest.mark.parametrize(("reason", "expected"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("IMAGE_SAFETY", "content_filter"), ("OTHER", "stop"), ("MALFORMED_FUNCTION_CALL", "stop"),
    ("FINISH_REASON_UNSPECIFIED", "stop"), (None, "stop"),
])
def test_finish_reasons_map_to_openai(reason: str | None, expected: str):
    resp = text_response("x")
    if reason is None:
        del resp["candidates"][0]["finishReason"]
    else:
        resp["candidates"][0]["finishReason"] = reason
    assert answer(resp)["choices"][0]["finish_reason"] == expected


def test_function_call_wins_over_max_tokens_finish_reason():
    resp = function_call_response("f", {})
    resp["candidates"][0]["finishReason"] = "MAX_TOKENS"
    assert answer(resp)["choices"][0]["finish_reason"] == "tool_calls"


def test_several_candidates_become_choices_ordered_by_index():
    out = answer({"candidates": [text_event("second", "STOP", index=1)["candidates"][0],
                                 text_event("first", "MAX_TOKENS", index=0)["candidates"][0]]})
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "first", "length"), (1, "second", "stop")]


def test_blocked_prompt_gives_one_empty_content_filter_choice():
    out = answer({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 7,
                                                                                  "totalTokenCount": 7}})
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "", "refusal": None},
                               "logprobs": None, "finish_reason": "content_filter"}]
    assert out["usage"]["prompt_tokens"] == 7 and out["usage"]["completion_tokens"] == 0


def test_candidate_blocked_by_safety_without_content():
    out = answer({"candidates": [{"finishReason": "SAFETY", "index": 0}]})
    assert out["choices"][0]["message"]["content"] == ""
    assert out["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize("resp", [[], {"candidates": "x"}, {"candidates": [42]},
                                  {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}])
def test_malformed_answers_raise_a_502_upstream_error(resp: Any):
    with pytest.raises(UpstreamError) as info:
        gemini_to_chat(resp, "m", "id", 1)
    assert info.value.status == 502 and info.value.reason == "protocol"


def test_usage_mapping_handles_missing_fields():
    assert gemini_usage(None) is None
    assert gemini_usage({"promptTokenCount": 3, "candidatesTokenCount": 4}) == {
        "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
    with_tools = gemini_usage({"promptTokenCount": 3, "toolUsePromptTokenCount": 2, "totalTokenCount": 5})
    assert with_tools is not None and with_tools["prompt_tokens"] == 5 and with_tools["total_tokens"] == 5


# --- streaming --------------------------------------------------------------------------------

def run_stream(events: list[dict[str, Any]], translator: GeminiStreamTranslator | None = None) -> tuple[
        GeminiStreamTranslator, list[dict[str, Any]]]:
    translator = translator or GeminiStreamTranslator("my-gemini", "chatcmpl-s", 1700000001)
    chunks: list[dict[str, Any]] = []
    for event in events:
        gtypes.GenerateContentResponse.model_validate(event)
        chunks.extend(translator.feed(event))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert (chunk["id"], chunk["object"], chunk["created"], chunk["model"]) == (
            "chatcmpl-s", "chat.completion.chunk", 1700000001, "my-gemini")
    return translator, chunks


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks]


def test_text_stream_becomes_chunks_with_role_first_and_a_final_finish_chunk():
    translator, chunks = run_stream([
        text_event("Hel", usage={"promptTokenCount": 5, "totalTokenCount": 5}),
        text_event("lo", usage={"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6}),
        text_event("!", finish="STOP", usage={"promptTokenCount": 5, "candidatesTokenCount": 2,
                                              "totalTokenCount": 7}),
    ])
    assert deltas(chunks) == [({"role": "assistant", "content": "Hel"}, None), ({"content": "lo"}, None),
                              ({"content": "!"}, None), ({}, "stop")]
    assert translator.finished
    assert translator.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                                "prompt_tokens_details": {"cached_tokens": 0},
                                "completion_tokens_details": {"reasoning_tokens": 0}}
    usage_chunk = translator.usage_chunk()
    assert usage_chunk == {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000001,
                           "model": "my-gemini", "choices": [], "usage": translator.usage}
    ChatCompletionChunk.model_validate(usage_chunk)


def test_stream_tool_calls_are_indexed_deltas_with_full_arguments():
    translator, chunks = run_stream([
        {"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "a", "args": {"x": 1}}, "thoughtSignature": SIG}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "b", "args": {}}}]},
                         "finishReason": "STOP"}], "usageMetadata": USAGE},
    ])
    (first, _), (second, _), (last, reason) = deltas(chunks)
    assert first["role"] == "assistant" and "role" not in second
    calls = [first["tool_calls"][0], second["tool_calls"][0]]
    assert [(c["index"], c["type"], c["function"]) for c in calls] == [
        (0, "function", {"name": "a", "arguments": '{"x":1}'}), (1, "function", {"name": "b", "arguments": "{}"})]
    assert thought_signature_from_id(calls[0]["id"]) == SIG and thought_signature_from_id(calls[1]["id"]) is None
    assert (last, reason) == ({}, "tool_calls")
    assert translator.finished


def test_stream_thoughts_become_reasoning_content_deltas():
    _, chunks = run_stream([{"candidates": [{"content": {"role": "model", "parts": [
        {"text": "hmm", "thought": True}, {"text": "Answer"}]}, "finishReason": "STOP"}]}])
    assert deltas(chunks) == [({"role": "assistant", "content": "Answer", "reasoning_content": "hmm"}, None),
                              ({}, "stop")]


def test_stream_without_finish_reason_is_reported_unfinished():
    translator, chunks = run_stream([text_event("partial", usage=USAGE)])
    assert deltas(chunks) == [({"role": "assistant", "content": "partial"}, None)]
    assert translator.finished is False
    assert translator.usage is not None


def test_empty_stream_is_unfinished_and_has_no_usage_chunk():
    translator, chunks = run_stream([])
    assert chunks == [] and translator.finished is False
    assert translator.usage is None and translator.usage_chunk() is None


def test_stream_finish_reason_alone_still_carries_the_role():
    _, chunks = run_stream([{"candidates": [{"finishReason": "SAFETY", "index": 0}]}])
    assert deltas(chunks) == [({"role": "assistant"}, "content_filter")]


def test_stream_blocked_prompt_ends_with_content_filter():
    translator, chunks = run_stream([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                                      "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}])
    assert deltas(chunks) == [({"role": "assistant"}, "content_filter")]
    assert translator.finished and translator.usage["prompt_tokens"] == 4


def test_usage_only_event_after_finish_updates_usage_without_chunks():
    translator, chunks = run_stream([text_event("hi", finish="STOP", usage={"promptTokenCount": 1}),
                                     {"usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1,
                                                        "totalTokenCount": 2}}])
    assert len(chunks) == 2 and translator.usage["total_tokens"] == 2


def test_stream_with_two_candidates_is_finished_only_when_both_are():
    translator = GeminiStreamTranslator("my-gemini", "chatcmpl-s", 1700000001)
    _, chunks = run_stream([{"candidates": [text_event("a", index=0)["candidates"][0],
                                            text_event("b", "STOP", index=1)["candidates"][0]]}], translator)
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in chunks] == [
        (0, {"role": "assistant", "content": "a"}), (1, {"role": "assistant", "content": "b"}), (1, {})]
    assert translator.finished is False
    translator.feed(text_event("", "MAX_TOKENS", index=0))
    assert translator.finished is True


def test_error_event_in_the_stream_raises_an_upstream_error():
    translator = GeminiStreamTranslator("m", "id", 1)
    with pytest.raises(UpstreamError) as info:
        translator.feed({"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}})
    assert info.value.status == 429 and info.value.retryable
    assert json.loads(info.value.json())["error"]["type"] == "rate_limit_error"


def test_non_dict_stream_event_raises_a_protocol_error():
    with pytest.raises(UpstreamError) as info:
        GeminiStreamTranslator("m", "id", 1).feed(["x"])  # type: ignore[arg-type]
    assert info.value.reason == "protocol"


# --- errors ---------------------------------------------------------------------------------

def google(status: int, message: str, name: str) -> bytes:
    return json.dumps({"error": {"code": status, "message": message, "status": name}}).encode()


@pytest.mark.parametrize(("status", "name", "out", "type_"), [
    (400, "INVALID_ARGUMENT", 400, "invalid_request_error"),
    (404, "NOT_FOUND", 404, "not_found_error"),
    (429, "RESOURCE_EXHAUSTED", 429, "rate_limit_error"),
    (503, "UNAVAILABLE", 503, "service_unavailable"),
    (504, "DEADLINE_EXCEEDED", 504, "timeout_error"),
    (500, "INTERNAL", 502, "upstream_error"),
    (401, "UNAUTHENTICATED", 502, "upstream_error"),
    (403, "PERMISSION_DENIED", 502, "upstream_error"),
    (409, "ABORTED", 400, "invalid_request_error"),
])
def test_google_errors_map_to_openai_errors(status: int, name: str, out: int, type_: str):
    got_status, body = gemini_error(status, google(status, "details here", name))
    assert got_status == out
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == name.lower()
    assert "details here" in body["error"]["message"]


@pytest.mark.parametrize("raw", [b"<html>Bad Gateway</html>", b"", b"\xff\xfe", b"[]", b'{"error": "x"}', b"null"])
def test_garbage_error_bodies_get_a_generic_message(raw: bytes):
    status, body = gemini_error(502, raw)
    assert status == 502
    assert body == {"error": {"message": "Vertex AI returned HTTP 502", "type": "upstream_error",
                              "code": "upstream_error"}}


def test_list_wrapped_google_error_is_understood():
    status, body = gemini_error(429, b"[" + google(429, "quota", "RESOURCE_EXHAUSTED") + b"]")
    assert status == 429 and body["error"]["message"] == "Vertex AI: quota"


def test_error_messages_never_echo_api_keys():
    key = "AIzaSyA1234567890abcdefghijklmnopqrstuv"
    _, body = gemini_error(400, google(400, f"API key {key} not valid; url ?key=secret123&alt=sse",
                                       "INVALID_ARGUMENT"))
    assert key not in body["error"]["message"] and "secret123" not in body["error"]["message"]
    assert "[redacted]" in body["error"]["message"]


# --- the strict wire validator itself --------------------------------------------------------------

OK_BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.mark.parametrize(("body", "fragment"), [
    ({**OK_BODY, "generation_config": {}}, "generation_config"),
    ({**OK_BODY, "generationConfig": {"max_output_tokens": 5}}, "max_output_tokens"),
    ({"contents": [{"role": "user", "parts": [{"text": "hi", "foo": 1}]}]}, "foo"),
    ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "!!"}}]}]},
     "base64"),
    ({**OK_BODY, "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}}, "SOMETIMES"),
    ({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}, "valid role"),
    ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
    ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, "empty text"),
    ({"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {"mimeType": "a/b", "data": "AA=="}}]}]},
     "exactly one"),
    ({"contents": [{"role": "user", "parts": [{"inlineData": None}]}]}, "null"),
    ({"contents": []}, "contents"),
    ({**OK_BODY, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "additionalProperties": False}}]}]},
     "additionalProperties"),
    ({**OK_BODY, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"a": {"type": "STRING", "$schema": "x"}}}}]}]}, "$schema"),
    ({**OK_BODY, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {}}}]}]}, "non-empty"),
    ({**OK_BODY, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {
        "type": "OBJECT", "properties": {"a": {"type": "INTEGER", "enum": ["1"]}}}}]}]}, "enum"),
    ({**OK_BODY, "generationConfig": {"responseSchema": {"type": "STRING"}}}, "responseMimeType"),
    ({**OK_BODY, "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
        "description": "d", "anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}}}, "only field set"),
    ({**OK_BODY, "generationConfig": {"presencePenalty": 2.0}}, "presencePenalty"),
    ({"contents": [{"role": "user", "parts": [{"text": "q"}]},
                   {"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}},
                                               {"functionCall": {"name": "b", "args": {}}}]},
                   {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]}]},
     "number of function response parts"),
    ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]}]},
     "function call turn"),
])
def test_wire_validator_rejects_what_vertex_rejects(body: dict[str, Any], fragment: str):
    with pytest.raises(GeminiRequestError) as info:
        validate_gemini_request(body)
    assert fragment in str(info.value)


# --- the scripted upstream ----------------------------------------------------------------------

BASE = "http://vertex.test/v1/publishers/google/models/gemini-2.5-flash"


@pytest.fixture
def upstream() -> VertexUpstream:
    return VertexUpstream(api_key="k-123")


def client(upstream: VertexUpstream) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream.app))


async def test_upstream_answers_scripted_json_and_records_the_request(upstream: VertexUpstream):
    upstream.push_json(text_response("hi there"))
    body = to_gemini(chat(user("hello")))
    async with client(upstream) as http:
        resp = await http.post(f"{BASE}:generateContent", json=body, headers={"x-goog-api-key": "k-123"})
    assert resp.status_code == 200
    assert gemini_to_chat(resp.json(), "g", "id", 1)["choices"][0]["message"]["content"] == "hi there"
    [record] = upstream.requests
    assert (record.model, record.action, record.body, record.answered) == (
        "gemini-2.5-flash", "generateContent", body, 200)
    assert record.headers["x-goog-api-key"] == "k-123"


async def test_upstream_streams_scripted_sse_events(upstream: VertexUpstream):
    upstream.push_stream([text_event("a"), text_event("b", "STOP", USAGE)])
    async with client(upstream) as http:
        resp = await http.post(f"{BASE}:streamGenerateContent", params={"alt": "sse"}, json=OK_BODY,
                               headers={"x-goog-api-key": "k-123"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    raw = resp.text.split("\r\n\r\n")
    assert raw[-1] == "" and all(e.startswith("data: ") for e in raw[:-1])
    translator, chunks = run_stream([json.loads(e[len("data: "):]) for e in raw[:-1]])
    assert translator.finished and "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "ab"


async def test_upstream_can_cut_a_stream(upstream: VertexUpstream):
    upstream.push_stream([text_event("a")], abort=True)
    async with client(upstream) as http:
        with pytest.raises(ConnectionAbortedError):
            await http.post(f"{BASE}:streamGenerateContent?alt=sse", json=OK_BODY, headers={"x-goog-api-key": "k-123"})


@pytest.mark.parametrize(("url", "headers", "body", "status", "google_status"), [
    (f"{BASE}:generateContent", {}, OK_BODY, 401, "UNAUTHENTICATED"),
    (f"{BASE}:generateContent", {"x-goog-api-key": "wrong"}, OK_BODY, 403, "PERMISSION_DENIED"),
    (f"{BASE}:generateContent?key=k-123", {"x-goog-api-key": "k-123"}, OK_BODY, 400, "INVALID_ARGUMENT"),
    (f"{BASE}:streamGenerateContent", {"x-goog-api-key": "k-123"}, OK_BODY, 400, "INVALID_ARGUMENT"),
    (f"{BASE}:generateContent", {"x-goog-api-key": "k-123"}, {"contents": [{"role": "bot"}]}, 400,
     "INVALID_ARGUMENT"),
    (f"{BASE}:countTokens", {"x-goog-api-key": "k-123"}, OK_BODY, 404, "NOT_FOUND"),
])
async def test_upstream_rejects_bad_requests_with_google_errors(upstream: VertexUpstream, url: str,
                                                                headers: dict[str, str], body: Any, status: int,
                                                                google_status: str):
    upstream.push_json(text_response("never sent"))
    async with client(upstream) as http:
        resp = await http.post(url, json=body, headers=headers)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["code"] == status and error["status"] == google_status and error["message"]
    assert upstream.requests[0].error and len(upstream.script) == 1
    _, mapped = gemini_error(resp.status_code, resp.content)
    assert mapped["error"]["message"].startswith("Vertex AI")


async def test_upstream_answers_scripted_errors_and_complains_when_the_script_is_empty(upstream: VertexUpstream):
    upstream.push_error(429, "Resource exhausted, please retry.")
    async with client(upstream) as http:
        first = await http.post(f"{BASE}:generateContent", json=OK_BODY, headers={"x-goog-api-key": "k-123"})
        second = await http.post(f"{BASE}:generateContent", json=OK_BODY, headers={"x-goog-api-key": "k-123"})
    assert first.status_code == 429 and first.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert gemini_error(429, first.content)[0] == 429
    assert second.status_code == 500 and "no canned reply" in second.json()["error"]["message"]


async def test_translated_conversation_round_trips_through_the_scripted_upstream(upstream: VertexUpstream):
    upstream.push_json(function_call_response("get_weather", {"city": "Oslo"}, thought_signature=SIG))
    upstream.push_json(text_response("It is 3C in Oslo."))
    messages: list[dict[str, Any]] = [user("Weather in Oslo?")]
    async with client(upstream) as http:
        for _ in range(2):
            body = chat(*messages, tools=[WEATHER_TOOL], tool_choice="auto")
            resp = await http.post(f"{BASE}:generateContent", json=to_gemini(body),
                                   headers={"x-goog-api-key": "k-123"})
            assert resp.status_code == 200, resp.text
            message = gemini_to_chat(resp.json(), "g", "id", 1)["choices"][0]["message"]
            messages.append({k: v for k, v in message.items() if k != "refusal"})
            for call in message.get("tool_calls") or ():
                messages.append(tool(call["id"], '{"temp_c": 3}'))
    assert messages[-1]["content"] == "It is 3C in Oslo."
    second = upstream.requests[1].body["contents"]
    assert second[1]["parts"][0]["thoughtSignature"] == SIG
    assert second[2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"temp_c": 3}}
