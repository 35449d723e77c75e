"""The API reference page's content, read from the published spec (`api.openapi_document()`):
each operation with its parameters, request body, responses and security, the models' fields
written out. Nothing here is written by hand: a new endpoint shows up by being decorated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass
class Row:
    name: str
    type: str
    required: bool
    description: str
    where: str = ""  # a parameter's place: path, query, header


@dataclass
class Body:
    schema: str
    content_type: str
    fields: list[Row]
    nested: list[tuple[str, list[Row]]] = field(default_factory=list)  # the models it uses


@dataclass
class Answer:
    status: str
    description: str
    body: Body | None


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    description: str
    tags: list[str]
    anchor: str
    parameters: list[Row] = field(default_factory=list)
    request: Body | None = None
    responses: list[Answer] = field(default_factory=list)
    security: list[str] = field(default_factory=list)


class Reader:
    def __init__(self, document: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = document.get("components", {}).get("schemas", {})
        self.document = document

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if isinstance(ref, str):
            found: dict[str, Any] = self.schemas.get(ref.rsplit("/", 1)[-1], {})
            return found
        return schema

    def name(self, schema: dict[str, Any]) -> str:
        resolved = self.resolve(schema)
        return str(resolved.get("title") or ref_name(schema.get("$ref", "")) or "object")

    def type_of(self, schema: dict[str, Any]) -> str:
        if "$ref" in schema:
            return self.name(schema)
        if "anyOf" in schema:
            return " | ".join(self.type_of(s) for s in schema["anyOf"])
        if "enum" in schema:
            return " | ".join(f'"{v}"' for v in schema["enum"])
        if "const" in schema:
            return f'"{schema["const"]}"'
        kind = schema.get("type", "any")
        if kind == "array":
            return f"list[{self.type_of(schema.get('items', {}))}]"
        extra = []
        if "format" in schema:
            extra.append(str(schema["format"]))
        for key, mark in (("minimum", "≥"), ("maximum", "≤")):
            if key in schema:
                extra.append(f"{mark} {schema[key]}")
        if "maxLength" in schema:
            extra.append(f"length {schema.get('minLength', 0)}..{schema['maxLength']}")
        return f"{kind} ({', '.join(extra)})" if extra else str(kind)

    def fields(self, schema: dict[str, Any]) -> list[Row]:
        resolved = self.resolve(schema)
        required = set(resolved.get("required", []))
        return [
            Row(
                name=name,
                type=self.type_of(prop),
                required=name in required,
                description=str(prop.get("description", "")),
            )
            for name, prop in resolved.get("properties", {}).items()
        ]

    def body(self, content: dict[str, Any]) -> Body | None:
        for content_type, media in content.items():
            schema = media.get("schema", {})
            nested = [(self.name(s), self.fields(s)) for s in self.used(schema)]
            return Body(self.name(schema), content_type, self.fields(schema), nested)
        return None

    def used(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        """The models a model's fields refer to, at any depth, each once, in order."""
        found: list[dict[str, Any]] = []
        seen = {schema.get("$ref")}

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref not in seen:
                    seen.add(ref)
                    found.append(node)
                    walk(self.resolve(node))
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.resolve(schema))
        return found

    def operations(self) -> list[Operation]:
        found = []
        for path, item in self.document.get("paths", {}).items():
            for method in METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                found.append(self.operation(path, method, operation))
        return found

    def operation(self, path: str, method: str, operation: dict[str, Any]) -> Operation:
        request = operation.get("requestBody", {}).get("content")
        return Operation(
            method=method.upper(),
            path=path,
            summary=str(operation.get("summary", "")),
            description=str(operation.get("description", "")),
            tags=list(operation.get("tags", [])),
            anchor=f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
            parameters=[
                Row(
                    name=str(p.get("name", "")),
                    type=self.type_of(p.get("schema", {})),
                    required=bool(p.get("required")),
                    description=str(p.get("description", "")),
                    where=str(p.get("in", "")),
                )
                for p in operation.get("parameters", [])
            ],
            request=self.body(request) if request else None,
            responses=[
                Answer(
                    str(status),
                    str(answer.get("description", "")),
                    self.body(answer.get("content", {})),
                )
                for status, answer in sorted(operation.get("responses", {}).items())
            ],
            security=sorted({name for option in operation.get("security", []) for name in option}),
        )


def ref_name(ref: str) -> str:
    """`#/components/schemas/PaymentIn.fad8ac4` -> `PaymentIn` (the hash is SpecTree's)."""
    last = ref.rsplit("/", 1)[-1]
    parts = [p for p in last.split(".") if p]
    return parts[0] if parts else ""


def operations(document: dict[str, Any]) -> list[Operation]:
    return Reader(document).operations()
