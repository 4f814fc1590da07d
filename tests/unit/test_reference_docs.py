"""The documentation site's reference pages are rendered from the CRDs and /openapi.json."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from svcreg.devtools.reference import crd_reference, http_reference
from svcreg.discovery.http.openapi import document

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _fields(where: str, node: dict[str, Any]) -> list[str]:
    found = [where]
    for name, child in node.get("properties", {}).items():
        found += _fields(f"{where}.{name}", child)
    items = node.get("items")
    if isinstance(items, dict):
        for name, child in items.get("properties", {}).items():
            found += _fields(f"{where}[].{name}", child)
    return found


def test_the_crd_reference_names_every_field_the_schema_declares() -> None:
    for path in sorted((ROOT / "deploy" / "crds").glob("*.svcreg.io.yaml")):
        crd = yaml.safe_load(path.read_text())
        page = crd_reference(path)
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]["properties"]
            for top in ("spec", "status"):
                for field in _fields(top, schema.get(top, {})) if top in schema else []:
                    assert f"| `{field}` |" in page, f"{path.name}: {field} missing from the reference"


def test_the_http_reference_names_every_route_and_parameter_openapi_serves() -> None:
    served = document()
    page = http_reference(served)
    for route, operations in served["paths"].items():
        for method, operation in operations.items():
            assert f"### `{method.upper()} {route}`" in page
            for parameter in operation.get("parameters", []):
                assert f"| `{parameter['name']}` |" in page


def test_the_readme_stays_a_front_page_and_the_reference_pages_are_generated() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    assert "make run" in readme and "make test" in readme
    assert "<!-- openapi -->" in (ROOT / "docs" / "reference" / "http.md").read_text()
    crd_page = (ROOT / "docs" / "reference" / "crd.md").read_text()
    for path in (ROOT / "deploy" / "crds").glob("*.svcreg.io.yaml"):
        assert f"<!-- crd: {path.name} -->" in crd_page
