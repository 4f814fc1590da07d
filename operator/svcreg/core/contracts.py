"""Capability contracts: ``inputSchema`` and ``outputSchema`` are JSON Schema (2020-12) objects.

The model bounds their size and shape (what the client checks too); whether each is a valid JSON
Schema is decided here with ``jsonschema``'s meta-schema check, imported only when a schema is
checked, so the light client never needs it. The operator refuses a registration whose schema is
not valid (Accepted=False, InvalidSpec, naming the field) and the registration API answers 400.
"""

from __future__ import annotations

from typing import Any

import pydantic

from svcreg.core.interning import shared, shared_fields_set
from svcreg.core.model import ServiceRegistrationSpec

_REFERENCES = ("$ref", "$dynamicRef")


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema (2020-12) that svcreg can apply, or None when it
    is. Beyond the meta-schema: every ``$ref`` must point inside the schema itself and resolve
    there (jsonschema would otherwise fetch a remote one with urllib, past the SSRF policy, or
    fail on every check), and ``$id`` is refused (it would move what a reference means)."""
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - the operator extra only
    from jsonschema.exceptions import SchemaError  # noqa: PLC0415

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = "/".join(str(p) for p in error.path)
        return f"{error.message}" + (f" (at {where})" if where else "")
    return reference_problem(schema)


def reference_problem(schema: dict[str, Any]) -> str | None:
    """The first reference of ``schema`` that does not resolve inside it, in words; None."""
    from referencing import Registry  # noqa: PLC0415 - jsonschema's own dependency
    from referencing.exceptions import Unresolvable  # noqa: PLC0415
    from referencing.jsonschema import DRAFT202012  # noqa: PLC0415

    resolver = Registry().with_resource("urn:svcreg:schema", DRAFT202012.create_resource(schema))
    lookup = resolver.resolver("urn:svcreg:schema")
    for where, keyword, value in _keywords(schema, ""):
        if keyword == "$id":
            return f"$id is not supported in a capability schema (at {where or '/'})"
        if not isinstance(value, str) or not value.startswith("#"):
            return f"{keyword} {str(value)[:200]!r} must point inside the schema (#/...) (at {where or '/'})"
        try:
            lookup.lookup(value)
        except Unresolvable:
            return f"{keyword} {value[:200]!r} does not resolve inside the schema (at {where or '/'})"
    return None


def _keywords(node: Any, where: str) -> list[tuple[str, str, Any]]:
    """Every ``$id``, ``$ref`` and ``$dynamicRef`` under ``node`` with its JSON pointer."""
    found: list[tuple[str, str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _REFERENCES or key == "$id":
                found.append((where, key, value))
            found += _keywords(value, f"{where}/{key}")
    elif isinstance(node, list):
        for number, value in enumerate(node):
            found += _keywords(value, f"{where}/{number}")
    return found


def contract_problem(spec: ServiceRegistrationSpec) -> tuple[str, str] | None:
    """The first capability schema that is not a valid JSON Schema: (field, why)."""
    for index, capability in enumerate(spec.capabilities):
        schemas = (("inputSchema", capability.input_schema), ("outputSchema", capability.output_schema))
        for field, schema in schemas:
            if schema is not None:
                problem = schema_problem(schema)
                if problem is not None:
                    return f"spec.capabilities[{index}].{field}", problem
    return None


def spec_problem(raw: dict[str, Any]) -> tuple[ServiceRegistrationSpec | None, str | None]:
    """A registration's spec as the model, or why it is not valid: every check the models make
    that the CRD's schema and CEL rules cannot (such as a capability schema that is not JSON
    Schema), worded with the field's path. The prober and the admission webhook share it."""
    try:
        spec = ServiceRegistrationSpec.model_validate(raw)
    except pydantic.ValidationError as error:
        return None, "; ".join(_located(e) for e in error.errors())[:1000]
    problem = contract_problem(spec)
    if problem is not None:
        return None, f"{problem[0]}: {problem[1]}"[:1000]
    # Kept for as long as the registration exists: the parts most registrations have in
    # common (a health check, damping settings, capabilities) are one object for all of them.
    return shared_fields_set(
        spec.model_copy(
            update={
                "health_check": shared(spec.health_check),
                "flap_damping": shared(spec.flap_damping),
                "capabilities": [shared(c) for c in spec.capabilities],
            }
        )
    ), None


def _located(error: Any) -> str:
    """A pydantic error with the spec field it concerns (camelCase, as written in YAML)."""
    path = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    message = str(error.get("msg", "invalid"))
    if not path or message.startswith("Value error, spec."):
        return message.removeprefix("Value error, ")
    return f"spec.{path}: {message.removeprefix('Value error, ')}"
