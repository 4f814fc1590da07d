"""Capability contracts: ``inputSchema`` and ``outputSchema`` are JSON Schema (2020-12) objects.

The model bounds their size and shape (what the client checks too); whether each is a valid JSON
Schema is decided here with ``jsonschema``'s meta-schema check, imported only when a schema is
checked, so the light client never needs it. The operator refuses a registration whose schema is
not valid (Accepted=False, InvalidSpec, naming the field) and the registration API answers 400.
"""

from __future__ import annotations

from typing import Any

from svcreg.core.model import ServiceRegistrationSpec


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema (2020-12), or None when it is."""
    from jsonschema import Draft202012Validator  # noqa: PLC0415 - the operator extra only
    from jsonschema.exceptions import SchemaError  # noqa: PLC0415

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = "/".join(str(p) for p in error.path)
        return f"{error.message}" + (f" (at {where})" if where else "")
    return None


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
