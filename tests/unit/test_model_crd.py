"""The pydantic models and the CRD describe the same resource.

Walks the CRD's OpenAPI schema and the models' JSON schema side by side: every field on one
side exists on the other with the same type, default, bounds, enum, pattern and required-ness.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from svcreg.core import model
from svcreg.devtools import kubectl as kube

CRD = yaml.safe_load((kube.CRD_DIR / "serviceregistrations.svcreg.io.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and unwrap ``X | None`` (anyOf with null) in pydantic's schema."""
    if "$ref" in node:
        node = {**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            merged = {**node, **_resolve(options[0], defs)}
            merged.pop("anyOf")
            return merged
    return node


def _cel_patterns(node: dict[str, Any]) -> set[str]:
    patterns = set()
    for rule in node.get("x-kubernetes-validations", []):
        patterns |= set(re.findall(r"matches\('([^']*)'\)", rule["rule"]))
    return patterns


def _compare(path: str, crd: dict[str, Any], py: dict[str, Any], defs: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    py = _resolve(py, defs)
    if crd.get("x-kubernetes-preserve-unknown-fields") or crd.get("x-kubernetes-int-or-string"):
        return problems  # checked by behaviour (policy and integration tests), not by shape
    if "type" in crd and "type" in py and _TYPES[crd["type"]] != py["type"]:
        problems.append(f"{path}: type {crd['type']} vs {py['type']}")
    for crd_key, py_key in (
        ("maxLength", "maxLength"),
        ("maxItems", "maxItems"),
        ("maxProperties", "maxProperties"),
        ("maximum", "maximum"),
    ):
        if crd.get(crd_key) != py.get(py_key):
            problems.append(f"{path}: {crd_key} {crd.get(crd_key)} vs {py.get(py_key)}")
    crd_min = crd.get("minimum")
    py_min = py.get("exclusiveMinimum", py.get("minimum"))
    if crd_min != py_min or bool(crd.get("exclusiveMinimum")) != ("exclusiveMinimum" in py):
        problems.append(f"{path}: minimum {crd_min} vs {py_min}")
    if "enum" in crd or "enum" in py:
        py_enum = py.get("enum") or ([py["const"]] if "const" in py else None)
        if sorted(crd.get("enum", [])) != sorted(py_enum or []):
            problems.append(f"{path}: enum {crd.get('enum')} vs {py_enum}")
    if "pattern" in py and py["pattern"] not in _cel_patterns(crd):
        problems.append(
            f"{path}: pattern {py['pattern']} not among the CRD's CEL patterns {_cel_patterns(crd)}"
        )
    if "default" in crd and crd["default"] != {} and crd["default"] != py.get("default"):
        problems.append(f"{path}: default {crd['default']!r} vs {py.get('default')!r}")
    if crd.get("type") == "object" and "properties" in crd:
        crd_props, py_props = crd["properties"], py.get("properties", {})
        if set(crd_props) != set(py_props):
            problems.append(f"{path}: fields {sorted(set(crd_props) ^ set(py_props))} only on one side")
        for name in set(crd_props) & set(py_props):
            problems += _compare(f"{path}.{name}", crd_props[name], py_props[name], defs)
        if set(crd.get("required", [])) != set(py.get("required", [])):
            problems.append(f"{path}: required {crd.get('required')} vs {py.get('required')}")
    if crd.get("type") == "object" and "additionalProperties" in crd:
        problems += _compare(
            f"{path}.*", crd["additionalProperties"], py.get("additionalProperties", {}), defs
        )
    if crd.get("type") == "array":
        problems += _compare(f"{path}[]", crd["items"], py.get("items", {}), defs)
    return problems


@pytest.mark.parametrize(
    ("section", "python_model"),
    [("spec", model.ServiceRegistrationSpec), ("status", model.ServiceRegistrationStatus)],
)
def test_model_matches_crd(section: str, python_model: type[model.BaseModel]) -> None:
    py_schema = python_model.model_json_schema(by_alias=True)
    problems = _compare(section, SCHEMA["properties"][section], py_schema, py_schema.get("$defs", {}))
    assert problems == []


POLICY = yaml.safe_load((kube.CRD_DIR / "servicepolicies.svcreg.io.yaml").read_text())


def test_policy_model_matches_crd() -> None:
    """The ServicePolicy spec (budget, shadow check) as the CRD and the model describe it."""
    schema = POLICY["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    py_schema = model.ServicePolicySpec.model_json_schema(by_alias=True)
    assert _compare("spec", schema, py_schema, py_schema.get("$defs", {})) == []


def test_the_comparison_notices_drift() -> None:
    """The walker is not vacuous: a changed bound, default or field is reported."""
    spec = SCHEMA["properties"]["spec"]
    py_schema = model.ServiceRegistrationSpec.model_json_schema(by_alias=True)
    defs = py_schema.get("$defs", {})
    drifted = yaml.safe_load(yaml.safe_dump(spec))
    drifted["properties"]["weight"]["maximum"] = 9999
    drifted["properties"]["healthCheck"]["properties"]["intervalSeconds"]["default"] = 15
    drifted["properties"]["colour"] = {"type": "string"}
    problems = _compare("spec", drifted, py_schema, defs)
    assert any("spec.weight: maximum" in p for p in problems)
    assert any("intervalSeconds: default" in p for p in problems)
    assert any("colour" in p for p in problems)


def test_crd_names_and_shape() -> None:
    names = CRD["spec"]["names"]
    assert CRD["spec"]["group"] == model.GROUP
    assert names["plural"] == model.PLURAL and names["kind"] == model.KIND
    assert set(names["shortNames"]) == {"svcreg", "sreg"}
    assert names["categories"] == ["svcreg"]
    version = CRD["spec"]["versions"][0]
    assert version["name"] == model.VERSION and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Service", "Version", "Health", "Endpoint", "Age"]


def _missing_descriptions(path: str, node: dict[str, Any]) -> list[str]:
    missing = [] if node.get("description") else [path]
    for name, child in node.get("properties", {}).items():
        missing += _missing_descriptions(f"{path}.{name}", child)
    return missing


def test_every_field_has_a_description() -> None:
    spec_and_status = {k: SCHEMA["properties"][k] for k in ("spec", "status")}
    missing = [p for k, v in spec_and_status.items() for p in _missing_descriptions(k, v)]
    assert missing == []


def test_every_string_and_list_is_bounded() -> None:
    """CEL cost estimation needs bounds; unbounded strings or lists make the CRD refuse rules."""

    def unbounded(path: str, node: dict[str, Any]) -> list[str]:
        found = []
        if (
            node.get("type") == "string"
            and "maxLength" not in node
            and "enum" not in node
            and "format" not in node
        ):
            found.append(path)
        if node.get("type") == "array" and "maxItems" not in node:
            found.append(path)
        if node.get("type") == "object" and "additionalProperties" in node and "maxProperties" not in node:
            found.append(path)
        for name, child in node.get("properties", {}).items():
            found += unbounded(f"{path}.{name}", child)
        if isinstance(node.get("additionalProperties"), dict):
            found += unbounded(f"{path}.*", node["additionalProperties"])
        if "items" in node:
            found += unbounded(f"{path}[]", node["items"])
        return found

    assert unbounded("spec", SCHEMA["properties"]["spec"]) == []
    assert unbounded("status", SCHEMA["properties"]["status"]) == []


def test_service_policy_model_matches_its_crd() -> None:
    crd = yaml.safe_load((kube.CRD_DIR / "servicepolicies.svcreg.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    py_schema = model.ServicePolicySpec.model_json_schema(by_alias=True)
    assert _compare("spec", schema["properties"]["spec"], py_schema, py_schema.get("$defs", {})) == []
    assert (
        crd["spec"]["names"]["plural"] == model.POLICY_PLURAL
        and crd["spec"]["names"]["kind"] == model.POLICY_KIND
    )
    assert _missing_descriptions("policy", schema) == []
