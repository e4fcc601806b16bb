"""Generate ``docs/values.md`` (the operator reference of every values key) from the schema.

Pure: schema in, Markdown out. ``afhub docs -o docs/values.md`` writes it; a test keeps the
committed file in step with the schema.
"""

from __future__ import annotations

from .values import resolve_ref as _resolve
from .values import schema

HEADER = """\
# Values reference

Every key of the afhub values file, generated from `hub_config/values.schema.json` by
`afhub docs -o docs/values.md` (do not edit by hand). Check a file with `afhub check FILE`;
see the effective JupyterHub configuration with `afhub render FILE`.

Secrets (`hub.db_url`, `hub.cookie_secret`, `hub.crypt_key`, `auth.client_secret`) can be given
inline, as `{env: VARIABLE}` or as `{file: PATH}`; `afhub render` masks them.
"""


def _type_of(node: dict, root: dict) -> str:
    node = _resolve(node, root)
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "anyOf" in node:
        return "secret"
    t = node.get("type", "")
    if t == "array":
        items = _resolve(node.get("items", {}), root)
        if items.get("type") == "object" or "properties" in items:
            return "list of mappings"
        return f"list of {_type_of(items, root) or 'values'}"
    if t == "object" and "properties" not in node:
        add = node.get("additionalProperties")
        if isinstance(add, dict):
            return f"mapping of {_type_of(add, root) or 'values'}"
        return "mapping"
    return t or ""


def _rows(node: dict, path: str, root: dict, out: list[tuple[str, str, str]]) -> None:
    node = _resolve(node, root)
    for key, sub in node.get("properties", {}).items():
        p = f"{path}.{key}" if path else key
        rsub = _resolve(sub, root)
        desc = (sub.get("description") or rsub.get("description") or "").replace("\n", " ")
        hint = sub.get("x-hint") or rsub.get("x-hint")
        if hint:  # the form a pattern-checked value takes, as `afhub check` says it
            desc = f"{desc} {hint[0].upper()}{hint[1:]}.".strip()
        out.append((p, _type_of(sub, root), desc))
        if "properties" in rsub:
            _rows(rsub, p, root, out)
        elif rsub.get("type") == "array":
            items = _resolve(rsub.get("items", {}), root)
            if "properties" in items:
                _rows(items, f"{p}[]", root, out)
        elif isinstance(rsub.get("additionalProperties"), dict):
            inner = _resolve(rsub["additionalProperties"], root)
            if "properties" in inner:
                _rows(inner, f"{p}.<name>", root, out)


def render_values_doc() -> str:
    root = schema()
    parts = [HEADER]
    for section, node in root["properties"].items():
        rnode = _resolve(node, root)
        parts.append(f"\n## `{section}`\n\n{rnode.get('description', '')}\n")
        rows: list[tuple[str, str, str]] = []
        if "properties" in rnode:
            _rows(rnode, section, root, rows)
        elif rnode.get("type") == "array":
            _rows(_resolve(rnode["items"], root), f"{section}[]", root, rows)
        parts.append("| key | type | meaning |\n|---|---|---|")
        for key, typ, desc in rows:
            cell = desc.replace("|", "\\|")
            parts.append(f"| `{key}` | {typ} | {cell} |")
    return "\n".join(parts) + "\n"
