"""Structured answers: values that satisfy a JSON Schema, and how models break them.

The simulated model answers a tool call, or a prompt that states a schema, with JSON
generated here from the schema itself: seeded, so one request and one seed always get
one answer, and varied across requests over enum values, type lists and optional
properties. No schema library: the generator covers the keywords a labelling or
extraction schema uses (types and type lists, ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties``, ``items``/``prefixItems``, item counts and
``uniqueItems``, numeric bounds and ``multipleOf``, string lengths and a few
``format``s, local ``$ref``/``$defs``, ``allOf``, ``anyOf``/``oneOf``). ``pattern`` is
not honoured, and for ``oneOf`` one branch is followed without checking that the
value fits no other. A schema that cannot be satisfied raises ``SchemaError``.

``break_value`` then spoils a valid value the way a real model sometimes does, so a
client's validation and repair paths have something to catch.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

#: the kinds of bad structured answer (FACTS §6.5: a client must validate)
INVALID_KINDS = ("enum", "missing", "type", "json")

_VOCABULARY = (
    "quality price delivery value packaging seller daily use expected clear "
    "opinion product works well fast slow bright dim lovely broken kettle lamp"
)
_WORDS = tuple(_VOCABULARY.split())
_MAX_DEPTH = 8  # past this, objects keep only required properties, arrays minItems
_FORMATS = {
    "date": lambda r: f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
    "date-time": lambda r: (
        f"2026-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
        f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z"
    ),
    "time": lambda r: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00Z",
    "email": lambda r: f"{r.choice(_WORDS)}@example.com",
    "uri": lambda r: f"https://example.com/{r.choice(_WORDS)}",
    "uuid": lambda r: (
        "%08x-%04x-4%03x-8%03x-%012x"  # noqa: UP031 - fixed widths
        % (
            r.getrandbits(32),
            r.getrandbits(16),
            r.getrandbits(12),
            r.getrandbits(12),
            r.getrandbits(48),
        )
    ),
}


class SchemaError(ValueError):
    """The schema cannot be answered: a bad ``$ref``, an empty enum, bounds that
    leave nothing, or a shape the generator does not know."""


@dataclass(frozen=True, slots=True)
class _Site:
    """A place in a generated value that ``break_value`` can spoil."""

    kind: str  # enum | missing | type
    path: tuple[str | int, ...]
    schema: dict[str, Any]
    types: tuple[str, ...] = ()  # the types the schema allows there (kind "type")
    in_union: bool = False  # under anyOf/oneOf, where another branch may accept it


class _Generator:
    def __init__(self, root: Any, rng: random.Random) -> None:
        if not isinstance(root, dict):
            msg = "a schema must be a JSON object"
            raise SchemaError(msg)
        self.root = root
        self.rng = rng
        self.sites: list[_Site] = []
        self._unions = 0  # how many anyOf/oneOf the value being made is under

    # --- resolving -----------------------------------------------------------

    def resolve(self, schema: Any, seen: int = 0) -> dict[str, Any]:
        """The schema with local ``$ref``s followed and ``allOf`` merged."""
        if schema is True or schema == {}:
            return {}
        if not isinstance(schema, dict):
            msg = f"expected a schema object, got {json.dumps(schema)[:60]}"
            raise SchemaError(msg)
        if seen > 32:
            msg = "$ref chain too long (a reference loop?)"
            raise SchemaError(msg)
        if "$ref" in schema:
            target = self._pointer(schema["$ref"])
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return self.resolve({**self.resolve(target, seen + 1), **rest}, seen + 1)
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"] or []:
                sub = self.resolve(part, seen + 1)
                props = {**merged.get("properties", {}), **sub.get("properties", {})}
                required = [*merged.get("required", []), *sub.get("required", [])]
                merged.update(sub)
                if props:
                    merged["properties"] = props
                if required:
                    merged["required"] = list(dict.fromkeys(required))
            return self.resolve(merged, seen + 1)
        return schema

    def _pointer(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            msg = f"only local references are supported, not {ref!r}"
            raise SchemaError(msg)
        node: Any = self.root
        for raw in ref[1:].split("/")[1:]:
            key = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                msg = f"reference {ref!r} does not resolve"
                raise SchemaError(msg)
        return node

    # --- generating ----------------------------------------------------------

    def value(self, raw: Any, path: tuple[str | int, ...], depth: int) -> Any:
        schema = self.resolve(raw)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if branches:
            if not isinstance(branches, list):
                msg = "anyOf/oneOf must be a list"
                raise SchemaError(msg)
            rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
            branch = self._branch(branches, depth)
            self._unions += 1
            try:
                return self.value({**rest, **self.resolve(branch)}, path, depth)
            finally:
                self._unions -= 1
        if "const" in schema:
            self._site("enum", path, {"enum": [schema["const"]]})
            return schema["const"]
        if "enum" in schema:
            options = schema["enum"]
            if not isinstance(options, list) or not options:
                msg = "enum must be a non-empty list"
                raise SchemaError(msg)
            self._site("enum", path, schema)
            return self.rng.choice(options)
        types = self._types(schema)
        kind = self._pick_type(types, depth)
        if "type" in schema:  # a value of any type cannot be of the wrong one
            self._site("type", path, schema, tuple(types))
        match kind:
            case "object":
                return self._object(schema, path, depth)
            case "array":
                return self._array(schema, path, depth)
            case "string":
                return self._string(schema)
            case "integer":
                return self._integer(schema)
            case "number":
                return self._number(schema)
            case "boolean":
                return self.rng.random() < 0.5
            case "null":
                return None
        msg = f"unknown type {kind!r}"
        raise SchemaError(msg)

    def _site(
        self,
        kind: str,
        path: tuple[str | int, ...],
        schema: dict[str, Any],
        types: tuple[str, ...] = (),
    ) -> None:
        self.sites.append(_Site(kind, path, schema, types, self._unions > 0))

    def _branch(self, branches: list[Any], depth: int) -> Any:
        if depth >= _MAX_DEPTH:
            # deep in a recursive schema: end it with a branch that needs no more
            for branch in branches:
                if self.resolve(branch).get("type") == "null":
                    return branch
        return self.rng.choice(branches)

    @staticmethod
    def _types(schema: dict[str, Any]) -> list[str]:
        declared = schema.get("type")
        if isinstance(declared, str):
            return [declared]
        if isinstance(declared, list) and declared:
            return [str(t) for t in declared]
        if "properties" in schema or "required" in schema:
            return ["object"]
        if "items" in schema or "prefixItems" in schema:
            return ["array"]
        if "minLength" in schema or "maxLength" in schema or "format" in schema:
            return ["string"]
        if any(k in schema for k in ("minimum", "maximum", "multipleOf")):
            return ["number"]
        return ["string", "integer", "boolean"]  # any value: a plausible scalar

    def _pick_type(self, types: list[str], depth: int) -> str:
        if depth >= _MAX_DEPTH and "null" in types:
            return "null"
        return self.rng.choice(types)

    def _object(
        self, schema: dict[str, Any], path: tuple[str | int, ...], depth: int
    ) -> dict[str, Any]:
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        extra = schema.get("additionalProperties", True)
        if not isinstance(props, dict) or not isinstance(required, list):
            msg = "properties must be an object and required a list"
            raise SchemaError(msg)
        keys = [k for k in props if k in required]
        optional = [k for k in props if k not in required]
        if depth < _MAX_DEPTH:
            keys += [k for k in optional if self.rng.random() < 0.6]
        want = schema.get("minProperties", 0)
        for key in optional:
            if len(keys) >= want:
                break
            if key not in keys:
                keys.append(key)
        out: dict[str, Any] = {}
        for key in props:  # the schema's own order reads naturally
            if key in keys:
                out[key] = self.value(props[key], (*path, key), depth + 1)
        for key in required:
            if key in out:
                continue
            if extra is False:
                msg = f"required property {key!r} is not allowed by the schema"
                raise SchemaError(msg)
            sub = extra if isinstance(extra, dict) else {"type": "string"}
            out[key] = self.value(sub, (*path, key), depth + 1)
        for key in required:
            self._site("missing", (*path, key), schema)
        return out

    def _array(
        self, schema: dict[str, Any], path: tuple[str | int, ...], depth: int
    ) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {"type": "string"})
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        if high < low:
            msg = f"maxItems {high} is less than minItems {low}"
            raise SchemaError(msg)
        if depth >= _MAX_DEPTH:
            count = max(low, len(prefix) if low else 0)
        else:
            count = self.rng.randint(
                max(low, min(1, high)), max(low, min(high, low + 3))
            )
        count = max(count, min(len(prefix), high))
        unique = bool(schema.get("uniqueItems"))
        out: list[Any] = []
        seen: set[str] = set()
        attempts = 0
        while len(out) < count:
            index = len(out)
            sub = prefix[index] if index < len(prefix) else items
            if sub is False:
                break
            item = self.value(sub, (*path, index), depth + 1)
            key = json.dumps(item, sort_keys=True)
            attempts += 1
            if unique and key in seen:
                if attempts > 50 * (count + 1):
                    if len(out) >= low:
                        break
                    msg = f"cannot find {low} distinct items for uniqueItems"
                    raise SchemaError(msg)
                here = (*path, index)
                self.sites = [s for s in self.sites if s.path[: len(here)] != here]
                continue
            seen.add(key)
            out.append(item)
        return out

    def _string(self, schema: dict[str, Any]) -> str:
        low = int(schema.get("minLength", 0))
        high = int(schema.get("maxLength", max(low, 48)))
        if high < low:
            msg = f"maxLength {high} is less than minLength {low}"
            raise SchemaError(msg)
        maker = _FORMATS.get(str(schema.get("format")))
        if maker is not None:
            text = str(maker(self.rng))
            if low <= len(text) <= high:
                return text
        length = self.rng.randint(max(low, min(4, high)), max(low, min(high, low + 40)))
        words: list[str] = []
        while len(" ".join(words)) < length:
            words.append(self.rng.choice(_WORDS))
        text = " ".join(words)[:length]
        return text[:-1] + "a" if text.endswith(" ") else text

    def _bounds(
        self, schema: dict[str, Any]
    ) -> tuple[float | None, bool, float | None, bool]:
        low, high = schema.get("minimum"), schema.get("maximum")
        low_open = high_open = False
        exclusive_min = schema.get("exclusiveMinimum")
        exclusive_max = schema.get("exclusiveMaximum")
        if exclusive_min is True:  # draft 4: a flag on minimum
            low_open = True
        elif isinstance(exclusive_min, int | float) and (
            low is None or exclusive_min >= low
        ):
            low, low_open = exclusive_min, True
        if exclusive_max is True:
            high_open = True
        elif isinstance(exclusive_max, int | float) and (
            high is None or exclusive_max <= high
        ):
            high, high_open = exclusive_max, True
        return low, low_open, high, high_open

    def _integer(self, schema: dict[str, Any]) -> int:
        low, low_open, high, high_open = self._bounds(schema)
        lo = math.floor(low) + 1 if low_open and low is not None else None
        if lo is None and low is not None:
            lo = math.ceil(low)
        hi = math.ceil(high) - 1 if high_open and high is not None else None
        if hi is None and high is not None:
            hi = math.floor(high)
        if lo is None and hi is None:
            lo, hi = 0, 100
        elif lo is None:
            lo = min(0, hi - 100) if hi is not None else 0
        elif hi is None:
            hi = lo + 100
        assert lo is not None and hi is not None  # noqa: S101 - set just above
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            first, last = math.ceil(lo / step), math.floor(hi / step)
            if first > last:
                msg = f"no multiple of {step} between {lo} and {hi}"
                raise SchemaError(msg)
            return self.rng.randint(first, last) * step
        if lo > hi:
            msg = f"no integer between the bounds ({lo} > {hi})"
            raise SchemaError(msg)
        return self.rng.randint(lo, hi)

    def _number(self, schema: dict[str, Any]) -> float:
        low, low_open, high, high_open = self._bounds(schema)
        lo = float(low) if low is not None else None
        hi = float(high) if high is not None else None
        if lo is None and hi is None:
            lo, hi = 0.0, 1.0  # an unbounded number reads like a score
        elif lo is None:
            lo = min(0.0, (hi or 0.0) - 100.0)
        elif hi is None:
            hi = lo + 100.0
        assert lo is not None and hi is not None  # noqa: S101 - set just above
        if lo > hi or (lo == hi and (low_open or high_open)):
            msg = f"no number between the bounds ({lo}, {hi})"
            raise SchemaError(msg)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            first = math.ceil(lo / step) + (1 if low_open else 0)
            last = math.floor(hi / step) - (1 if high_open else 0)
            if first > last:
                msg = f"no multiple of {step} between {lo} and {hi}"
                raise SchemaError(msg)
            return round(self.rng.randint(first, last) * step, 10)
        for _ in range(20):
            value = round(self.rng.uniform(lo, hi), 2)
            if (lo < value or (not low_open and lo == value)) and (
                value < hi or (not high_open and value == hi)
            ):
                return value
        return (lo + hi) / 2


def generate(schema: Any, rng: random.Random) -> Any:
    """A value that satisfies ``schema``, drawn with ``rng``."""
    return _Generator(schema, rng).value(schema, (), 0)


def _at(value: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _wrong_enum(value: Any, options: list[Any]) -> Any:
    if isinstance(value, str):
        for candidate in (value.capitalize() + ".", value + ".", value.upper() + "!"):
            if candidate not in options:
                return candidate
    numbers = [
        o for o in options if isinstance(o, int | float) and not isinstance(o, bool)
    ]
    if numbers:
        return max(numbers) + 1
    return f"{value}."


def _wrong_type(value: Any, allowed: tuple[str, ...]) -> Any:
    """A value of a type the schema does not allow here, the way models slip."""
    candidates: list[tuple[str, Any]] = []
    if isinstance(value, bool):
        candidates.append(("string", str(value).lower()))
    elif isinstance(value, int | float):
        candidates.append(("string", str(value)))
    elif isinstance(value, str):
        candidates += [("integer", len(value)), ("array", [value])]
    elif isinstance(value, list):
        candidates.append(("string", ", ".join(map(str, value))))
    elif isinstance(value, dict):
        candidates.append(("string", json.dumps(value)))
    else:
        candidates.append(("string", "null"))
    candidates.append(("object", {"value": value}))
    for kind, candidate in candidates:
        if kind not in allowed and not (kind == "integer" and "number" in allowed):
            return candidate
    return {"value": value}


def _cut(text: str) -> str:
    """JSON text cut short, as an answer that ran out mid-way: never valid JSON."""
    cut = text[: max(1, len(text) * 2 // 3)]
    for tail in ("", ",", ' "'):
        try:
            json.loads(cut + tail)
        except ValueError:
            return cut + tail
    return "{" + cut


def break_value(schema: Any, rng: random.Random, kind: str) -> tuple[Any, str, str]:
    """A value generated for ``schema`` and spoiled as ``kind``: (value, JSON text,
    the kind applied). A kind the value offers no place for (no enum, nothing
    required) falls back to ``type``, then to ``json``, which always applies."""
    if kind not in INVALID_KINDS:
        msg = f"unknown invalid-answer kind {kind!r}; known: {', '.join(INVALID_KINDS)}"
        raise ValueError(msg)
    generator = _Generator(schema, rng)
    value = generator.value(schema, (), 0)
    for applied in dict.fromkeys((kind, "type", "json")):
        if applied == "json":
            text = json.dumps(value, ensure_ascii=False)
            return value, _cut(text), "json"
        sites = [s for s in generator.sites if s.kind == applied]
        if applied == "missing":
            sites = [s for s in sites if _has(value, s.path)]
        if not sites:
            continue
        # a property rather than the whole answer, the shallowest first: what a
        # reader of the answer notices
        sites = [s for s in sites if s.path] or sites
        sites = [s for s in sites if not s.in_union] or sites
        shallow = min(len(s.path) for s in sites)
        site = rng.choice([s for s in sites if len(s.path) == shallow])
        value = _spoil(value, site)
        return value, json.dumps(value, ensure_ascii=False), applied
    raise AssertionError  # pragma: no cover - "json" always returns


def _has(value: Any, path: tuple[str | int, ...]) -> bool:
    try:
        _at(value, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _spoil(value: Any, site: _Site) -> Any:
    if not site.path:  # the value itself
        if site.kind == "enum":
            return _wrong_enum(value, site.schema["enum"])
        return _wrong_type(value, site.types)
    parent = _at(value, site.path[:-1])
    last = site.path[-1]
    if site.kind == "missing":
        del parent[last]
    elif site.kind == "enum":
        parent[last] = _wrong_enum(parent[last], site.schema["enum"])
    else:
        parent[last] = _wrong_type(parent[last], site.types)
    return value


# --- text around prompt-mode answers -----------------------------------------------

_LEADS = ("Here is the label:", "Here is the answer:", "Sure, here is the JSON:")


def wrap_json(text: str, rng: random.Random) -> str:
    """Prompt-mode JSON as models write it: bare, fenced, or after one sentence."""
    form = rng.randrange(3)
    if form == 0:
        return text
    fenced = f"```json\n{text}\n```"
    return fenced if form == 1 else f"{rng.choice(_LEADS)}\n{fenced}"


def fragments(text: str, size: int = 8) -> list[str]:
    """Stream pieces of a tool call's arguments: several, so a client must join them."""
    if len(text) <= size:
        half = max(1, len(text) // 2)
        return [p for p in (text[:half], text[half:]) if p] or [""]
    return [text[i : i + size] for i in range(0, len(text), size)]
