"""Sentences about a JSON schema (pydantic's ``model_json_schema()``): what a key allows, unknown keys, errors.

:class:`SchemaText` walks the schema by a key's path, so that a pydantic error becomes one line that names the
dotted key, the bad value and what is allowed (``an integer >= 2``, ``one of auto, cpu, cuda``), and an unknown
key is named with the closest valid one (:func:`difflib.get_close_matches`) and the keys of its section.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

Node = dict[str, Any]
Loc = Iterable[str | int]

BOUNDS = (("exclusiveMinimum", ">"), ("gt", ">"), ("minimum", ">="), ("ge", ">="), ("exclusiveMaximum", "<"), ("lt", "<"), ("maximum", "<="), ("le", "<="))
TYPE_WORDS = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string", "array": "a list", "object": "a mapping"}
CONSTRAINT_ERRORS = ("literal_error", "too_short", "greater_than", "greater_than_equal", "less_than", "less_than_equal")


def dotted(loc: Loc) -> str:
    """``("imbalance", "sizes", 1)`` -> ``imbalance.sizes[1]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def did_you_mean(name: str, known: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean `{prefix}{close[0]}`?" if close else ""


class SchemaText:
    def __init__(self, schema: Node) -> None:
        self.schema = schema

    # ---------------------------------------------------------------------------------------------- walking
    def resolve(self, node: Node) -> Node:
        """A node with its ``$ref`` (or one-element ``allOf``) merged in."""
        if len(node.get("allOf", ())) == 1:
            node = {**{k: v for k, v in node.items() if k != "allOf"}, **node["allOf"][0]}
        if "$ref" in node:
            target = self.schema["$defs"][node["$ref"].rpartition("/")[2]]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def branches(self, node: Node) -> tuple[list[Node], bool]:
        """The non-null alternatives of a node, resolved, and whether null is allowed (int | float: a number)."""
        node = self.resolve(node)
        options = node.get("anyOf", [node])
        kinds = [self.resolve(o) for o in options if o.get("type") != "null"]
        nullable = len(kinds) < len(options)
        if len(kinds) > 1 and {k.get("type") for k in kinds} == {"integer", "number"}:
            kinds = [{"type": "number"}]
        return kinds or [{}], nullable

    def is_section(self, node: Node) -> bool:
        return "properties" in self.branches(node)[0][0]

    def is_mapping(self, node: Node) -> bool:
        """A section or a map (e.g. ``data.hub``): something that holds keys."""
        return self.branches(node)[0][0].get("type") == "object"

    def child(self, node: Node, part: str | int) -> Node | None:
        """The node of key ``part`` inside ``node``: a section's field, a list's item, or any key of a map."""
        for b in self.branches(node)[0]:
            if isinstance(part, str) and part in b.get("properties", {}):
                return b["properties"][part]
            if isinstance(part, int) and isinstance(b.get("items"), dict):
                return b["items"]
            if isinstance(part, str) and isinstance(b.get("additionalProperties"), dict):
                return b["additionalProperties"]
        return None

    def node_at(self, loc: Loc) -> Node:
        node: Node | None = self.schema
        for part in loc:
            node = self.child(node, part) if node is not None else None
        return node or {}

    def keys(self, node: Node) -> list[str]:
        return [k for b in self.branches(node)[0] for k in b.get("properties", {})]

    def leaf_keys(self) -> tuple[str, ...]:
        """The dotted keys of the values in the sections (not sections, not maps), e.g. ``augment.vae.latent_dim``."""
        found: list[str] = []

        def walk(node: Node, prefix: str) -> None:
            for name in self.keys(node):
                child = self.child(node, name) or {}
                if self.is_section(child):
                    walk(child, f"{prefix}{name}.")
                elif not self.is_mapping(child):
                    found.append(prefix + name)

        walk(self.schema, "")
        return tuple(found)

    # ---------------------------------------------------------------------------------------------- words
    def expected(self, node: Node) -> str:
        """What a node allows, in words: ``an integer >= 2``, ``one of auto, cpu, cuda``, ``a number > 0, or null``."""
        kinds, nullable = self.branches(node)
        kind = kinds[0]
        if "enum" in kind:
            words = "one of " + ", ".join(map(str, kind["enum"]))
        else:
            words = node.get("description") or TYPE_WORDS.get(kind.get("type", ""), "a valid value")
            if kind.get("minItems") or kind.get("minProperties"):
                words = f"a non-empty {words.removeprefix('a ')}"
        limits = {**kind, **{k: v for k, v in node.items() if k in ("gt", "ge", "lt", "le")}}
        bounds = [f"{op} {limits[k]}" for k, op in BOUNDS if k in limits]
        words += "".join(f" {b}" for b in bounds[:1]) + "".join(f" and {b}" for b in bounds[1:])
        return words + (", or null" if nullable else "")

    def unknown(self, parent: list[str | int], key: str | int, source: str) -> str:
        """``Unknown key `augment.k_neighbours` in params.yaml; did you mean `augment.k_neighbors`? (keys of ...)``."""
        known = self.keys(self.node_at(parent))
        prefix = f"{dotted(parent)}." if parent else ""
        where = f"`{dotted(parent)}`" if parent else source
        return f"Unknown key `{prefix}{key}` in {source}{did_you_mean(str(key), known, prefix)} (keys of {where}: {', '.join(known)})."

    def message(self, err: Mapping[str, Any], source: str) -> str:
        """One pydantic error (an item of ``ValidationError.errors()``) as one sentence.

        A validator's ValueError text is used as it is when it starts with a backtick (it names its own keys),
        after the key when it starts in lower case (``must ...``), and after ``key:`` otherwise.
        """
        loc, kind, value = list(err["loc"]), err["type"], err.get("input")
        path = dotted(loc)
        if kind == "extra_forbidden":
            return self.unknown(loc[:-1], loc[-1], source)
        node = self.node_at(loc)
        if kind == "missing":
            if self.is_section(node):
                return f"{source} needs {article(path)} `{path}:` section (a mapping)."
            return f"{source} needs `{path}` ({self.expected(node)})."
        if kind == "value_error":
            text = str(err["ctx"]["error"]).rstrip(".")
            subject = f"`{path}`" if path else source
            if text.startswith("`"):
                return f"{text}."
            return f"{subject} {text}." if text[:1].islower() else f"{subject}: {text}."
        if kind.endswith(("_type", "_parsing", "_from_float")) or kind in CONSTRAINT_ERRORS:
            return f"`{path}` must be {self.expected(node)}, but got {value!r}."
        return f"`{path}`: {err['msg']}, but got {value!r}."
