"""JSON schemas as GBNF grammars (response_format's json_schema; json_object is any JSON object).

The conversion is llama-cpp-python's (`llama_cpp.llama_grammar.json_schema_to_gbnf`, a port of
llama.cpp's json_schema_to_grammar). That converter skips the keywords it does not know, which would
let a reply ignore part of the schema; so a schema is first checked against what the converter
enforces, and anything else is refused with SchemaError naming it and where it is.

Enforced: type (one, or a list of bare types), properties / required / additionalProperties,
items (a schema, or a list: a tuple) / prefixItems / minItems / maxItems, enum, const,
anyOf / oneOf (oneOf as anyOf: exclusivity is not checked), allOf of objects (every property of
them required), local $ref into $defs / definitions, string minLength / maxLength, pattern
(^...$ anchored), format date / time / date-time / uuid. Annotations (title, description,
default, examples, ...) are ignored. An empty schema {} is taken as "an object" (the converter's
reading; stricter than JSON Schema's "anything").
"""
from __future__ import annotations

import json

from llama_cpp.llama_grammar import JSON_GBNF, PRIMITIVE_RULES, json_schema_to_gbnf

from .errors import SenseError

ANNOTATIONS = {"title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated",
               "readOnly", "writeOnly", "$defs", "definitions"}
TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}

# The converter's string characters let raw control characters (a newline) into a string, which is
# not JSON; llama.cpp's own converter excludes them as JSON_GBNF does.
_CHAR = "char ::= " + PRIMITIVE_RULES["char"].content
_JSON_CHAR = "char ::= " + PRIMITIVE_RULES["char"].content.replace('[^"\\\\]', '[^"\\\\\\x7F\\x00-\\x1F]', 1)


class SchemaError(SenseError):
    """A schema the grammar cannot enforce (or not a schema at all)."""


def json_object_grammar() -> str:
    """Any JSON object (response_format {"type": "json_object"})."""
    return JSON_GBNF


def schema_grammar(schema) -> str:
    """The GBNF of `schema`; SchemaError naming every part of it that would not be enforced."""
    problems = unsupported(schema)
    if problems:
        raise SchemaError("the JSON schema uses what this server cannot enforce: " + "; ".join(problems[:8]))
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except (ValueError, AssertionError, KeyError, TypeError, IndexError, RecursionError) as exc:
        raise SchemaError(f"the JSON schema could not be turned into a grammar: {exc}") from None
    return gbnf.replace(_CHAR, _JSON_CHAR)


def unsupported(schema, where: str = "#") -> list[str]:
    """What in `schema` (at JSON pointer `where`) the grammar would not enforce, one line each."""
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be an object (got {json.dumps(schema)[:40]})"]
    out: list[str] = []
    for defs in ("$defs", "definitions"):
        for name, sub in (schema.get(defs) or {}).items():
            out += unsupported(sub, f"{where}/{defs}/{name}")
    return out + _shape(schema, where, schema.get("type"))


def _only(schema: dict, where: str, *allowed: str) -> list[str]:
    """The keywords of `schema` beside its annotations and `allowed`: not enforced in its shape."""
    extra = sorted(set(schema) - ANNOTATIONS - set(allowed))
    return [f"{where}: {', '.join(repr(k) for k in extra)} not supported here"] if extra else []


def _shape(schema: dict, where: str, kind) -> list[str]:
    """The problems of the one shape `schema` has, the first that its keywords match."""
    if "$ref" in schema:
        return _ref(schema, where)
    if "anyOf" in schema or "oneOf" in schema:
        return _union(schema, where)
    if isinstance(kind, list):
        return _only(schema, where, "type") + [f"{where}/type: unknown type {t!r}" for t in kind if t not in TYPES]
    if kind is not None and kind not in TYPES:
        return [f"{where}/type: unknown type {kind!r}"]
    if "const" in schema:
        return _only(schema, where, "const", "type")
    if "enum" in schema:
        return _enum(schema, where)
    if kind in (None, "object") and ("properties" in schema or "additionalProperties" in schema):
        return _object(schema, where)
    if kind in (None, "object") and "allOf" in schema:
        return _all_of(schema, where)
    if kind in (None, "array") and ("items" in schema or "prefixItems" in schema):
        return _array(schema, where)
    if kind in (None, "string") and ("pattern" in schema or "format" in schema):
        return _string(schema, where)
    if kind == "string" and ("minLength" in schema or "maxLength" in schema):
        return _only(schema, where, "type", "minLength", "maxLength")
    return _only(schema, where, "type")


def _ref(schema: dict, where: str) -> list[str]:
    out = _only(schema, where, "$ref")
    if not (isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/")):
        out.append(f"{where}: only local $ref (#/$defs/...) is supported")
    return out


def _union(schema: dict, where: str) -> list[str]:
    union = "anyOf" if "anyOf" in schema else "oneOf"
    out = _only(schema, where, union)
    branches = schema[union]
    if not isinstance(branches, list) or not branches:
        return out + [f"{where}/{union}: must be a non-empty list"]
    for i, sub in enumerate(branches):
        out += unsupported(sub, f"{where}/{union}/{i}")
    return out


def _enum(schema: dict, where: str) -> list[str]:
    out = _only(schema, where, "enum", "type")
    if not isinstance(schema["enum"], list) or not schema["enum"]:
        out.append(f"{where}/enum: must be a non-empty list")
    return out


def _all_of(schema: dict, where: str) -> list[str]:
    """allOf of $refs and objects of properties (every property of them required)."""
    out = _only(schema, where, "type", "allOf")
    for i, part in enumerate(schema["allOf"] if isinstance(schema["allOf"], list) else [None]):
        at = f"{where}/allOf/{i}"
        if isinstance(part, dict) and "$ref" in part:
            out += unsupported(part, at)
        elif not isinstance(part, dict) or set(part) - ANNOTATIONS - {"type", "properties", "required"}:
            out.append(f"{at}: allOf parts must be $refs or objects of properties")
        else:
            out += [p for name, sub in (part.get("properties") or {}).items()
                    for p in unsupported(sub, f"{at}/properties/{name}")]
    return out


def _array(schema: dict, where: str) -> list[str]:
    items = schema.get("items", schema.get("prefixItems"))
    if not isinstance(items, list):
        return _only(schema, where, "type", "items", "minItems", "maxItems") + unsupported(items, f"{where}/items")
    out = _only(schema, where, "type", "items" if "items" in schema else "prefixItems")
    for i, sub in enumerate(items):
        out += unsupported(sub, f"{where}/items/{i}")
    return out


def _string(schema: dict, where: str) -> list[str]:
    """A string with a pattern (which wins over a format) or a format."""
    if "pattern" in schema:
        pattern = schema["pattern"]
        anchored = isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")
        return _only(schema, where, "type", "pattern") + ([] if anchored else [f"{where}/pattern: must be anchored as ^...$"])
    out = _only(schema, where, "type", "format")
    if schema["format"] not in FORMATS:
        out.append(f"{where}/format: {schema['format']!r} not supported (supported: {', '.join(sorted(FORMATS))})")
    return out


def _object(schema: dict, where: str) -> list[str]:
    out = _only(schema, where, "type", "properties", "required", "additionalProperties")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        return out + [f"{where}/properties: must be an object"]
    for name, sub in props.items():
        out += unsupported(sub, f"{where}/properties/{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or any(name not in props for name in required):
        out.append(f"{where}/required: must list names of its properties")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out += unsupported(extra, f"{where}/additionalProperties")
    elif extra is not None and not isinstance(extra, bool):
        out.append(f"{where}/additionalProperties: must be a boolean or a schema")
    return out
