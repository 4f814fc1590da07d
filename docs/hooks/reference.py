"""MkDocs hook: fill the reference pages' markers from the CRDs and the OpenAPI document.

``<!-- crd: FILE -->`` becomes the reference of ``deploy/crds/FILE``; ``<!-- openapi -->`` the
reference of every HTTP route. The rendering lives in ``svcreg.devtools.reference``.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

from svcreg.devtools.reference import crd_reference, http_reference

_ROOT = pathlib.Path(__file__).resolve().parents[2]
_CRD = re.compile(r"<!-- crd: ([\w.-]+\.yaml) -->")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = _CRD.sub(lambda m: crd_reference(_ROOT / "deploy" / "crds" / m.group(1)), markdown)
    if "<!-- openapi -->" in markdown:
        from svcreg.discovery.http.openapi import document  # noqa: PLC0415 - only for this page

        markdown = markdown.replace("<!-- openapi -->", http_reference(document()))
    return markdown
