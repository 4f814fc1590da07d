"""The documentation site's reference pages, rendered from the sources of truth.

The CRD reference is rendered from ``deploy/crds/*.yaml`` (the schema the API server enforces)
and the HTTP reference from ``svcreg.discovery.http.openapi.document()`` (what ``/openapi.json``
serves), so neither is written twice. ``docs/hooks/reference.py`` calls these while MkDocs
builds; each returns Markdown.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import yaml

_METHODS = ("get", "put", "post", "patch", "delete", "head")


def crd_reference(path: pathlib.Path) -> str:
    """Every field of the CRD at ``path``, version by version: its path, type, constraints and
    description, in the order the schema declares them; then its printer columns."""
    crd = yaml.safe_load(path.read_text())
    names = crd["spec"]["names"]
    out = [f"`{names['kind']}` (`{crd['spec']['group']}`, plural `{names['plural']}`"]
    if names.get("shortNames"):
        out[0] += ", short names " + ", ".join(f"`{n}`" for n in names["shortNames"])
    out[0] += f", {crd['spec']['scope']})."
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        out += ["", f"### `{version['name']}`", "", *_head("field", "type", "constraints", "description")]
        for name in ("spec", "status"):
            if name in schema.get("properties", {}):
                out += list(_rows(name, schema["properties"][name], name in schema.get("required", [])))
        columns = version.get("additionalPrinterColumns", [])
        if columns:
            out += ["", "Printer columns (`kubectl get`):", "", *_head("column", "from")]
            out += [_row(c["name"], f"`{c['jsonPath']}`") for c in columns]
    return "\n".join(out) + "\n"


def _rows(where: str, node: dict[str, Any], required: bool) -> Any:
    yield _row(f"`{where}`", _type(node), _constraints(node, required), _cell(node.get("description", "")))
    needed = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        yield from _rows(f"{where}.{name}", child, name in needed)
    items = node.get("items")
    if isinstance(items, dict) and (items.get("properties") or items.get("items")):
        needed = set(items.get("required", []))
        for name, child in items.get("properties", {}).items():
            yield from _rows(f"{where}[].{name}", child, name in needed)


def _type(node: dict[str, Any]) -> str:
    kind = str(node.get("type", "any"))
    if kind == "array" and isinstance(node.get("items"), dict):
        return f"array of {node['items'].get('type', 'any')}"
    if node.get("x-kubernetes-int-or-string"):
        return "integer or string"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return f"{kind} (free-form)"
    return kind


def _constraints(node: dict[str, Any], required: bool) -> str:
    said = ["required"] if required else []
    for key, words in (
        ("default", "default"),
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("maxItems", "max items"),
        ("maxProperties", "max properties"),
        ("pattern", "pattern"),
    ):
        if key in node:
            said.append(f"{words} `{_code(node[key])}`")
    if "enum" in node:
        said.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for rule in node.get("x-kubernetes-validations", []):
        said.append(_cell(rule.get("message", rule["rule"])))
    return "; ".join(said)


def http_reference(document: dict[str, Any]) -> str:
    """Every route of the OpenAPI ``document``: method, path, summary, parameters and answers;
    then every schema the answers name, with its fields."""
    out: list[str] = []
    for route, operations in document["paths"].items():
        for method in _METHODS:
            if method in operations:
                out += _operation(method, route, operations[method])
    schemas = document.get("components", {}).get("schemas", {})
    if schemas:
        out += ["", "## Schemas", ""]
        for name, schema in schemas.items():
            out += ["", f"### {name}", "", _cell(schema.get("description", ""))]
            fields = schema.get("properties", {})
            if fields:
                out += ["", *_head("field", "schema", "description")]
                out += [
                    _row(f"`{field}`", _schema(spec), _cell(spec.get("description", "")))
                    for field, spec in fields.items()
                ]
    return "\n".join(out).lstrip("\n") + "\n"


def _operation(method: str, route: str, operation: dict[str, Any]) -> list[str]:
    out = ["", f"### `{method.upper()} {route}`", "", _cell(operation.get("summary", ""))]
    parameters = operation.get("parameters", [])
    if parameters:
        out += ["", *_head("parameter", "in", "schema", "description")]
        for p in parameters:
            shape = _schema(p.get("schema", {}))
            out.append(_row(f"`{p['name']}`", p["in"], shape, _cell(p.get("description", ""))))
    for media, content in operation.get("requestBody", {}).get("content", {}).items():
        out += ["", f"Body: `{media}`, {_schema(content.get('schema', {}))}."]
    answers = operation.get("responses", {})
    if answers:
        out += ["", *_head("answer", "description", "body")]
        for code, answer in answers.items():
            shapes = ", ".join(_schema(c.get("schema", {})) for c in answer.get("content", {}).values())
            out.append(_row(code, _cell(answer.get("description", "")), shapes))
    return out


def _schema(schema: dict[str, Any]) -> str:
    """A schema in a few words: a reference by its name (linked), a type, an enum."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            return " or ".join(_schema(s) for s in schema[combined])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"array of {_schema(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map of {_schema(schema['additionalProperties'])}"
    return kind


def _head(*names: str) -> list[str]:
    """A Markdown table's heading and rule."""
    return [_row(*names), _row(*("---" for _ in names))]


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("`", "'")


def _cell(text: str) -> str:
    """Text that stays inside one table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")
