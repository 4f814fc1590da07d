"""Request bodies read into their wire models, with a 400 that names the first wrong field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from svcreg.core.errors import BadParameter

M = TypeVar("M", bound=BaseModel)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def parse_model(model: type[M], raw: bytes) -> M:
    """``raw`` (JSON) as ``model``; BadParameter naming the field, in its wire spelling, else.
    Unknown fields are refused by the models themselves."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        problems = error.errors()
        # An unknown field is named before what its misspelling left missing.
        first = next((e for e in problems if e["type"] == "extra_forbidden"), problems[0])
        where = ".".join(_camel(p) if isinstance(p, str) else str(p) for p in first["loc"]) or "body"
        raise BadParameter(where, first["msg"]) from error
