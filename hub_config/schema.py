"""The values JSON Schema as shipped (``values.schema.json``), before sections add theirs.

Foundation (docs/developers.md, "Layers"): imports nothing of afhub, so the section registry
(``sections.py``), validation (``values.py``) and the spawner's profile keys
(``spawner/profile_keys.py``) all read the one file without importing each other. The composed
schema (the file plus each section owner's ``SCHEMA``) is ``sections.schema()``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_RESOURCE = "values.schema.json"


@lru_cache(maxsize=1)
def file_schema() -> dict[str, Any]:
    """``values.schema.json`` as shipped (the sections' own ``SCHEMA`` not added)."""
    text = resources.files("afhub.hub_config").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    return json.loads(text)
