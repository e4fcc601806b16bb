"""Load and validate an afhub values file.

Pure functions only: text or a dict in, a dict or a list of :class:`Problem` out.
Nothing here reads the environment, starts processes or touches a traitlets Config
(see ``apply.py`` for that). Every problem names the key path it is about, in the
``profiles[2].resources.gpu.count`` form operators see in their YAML.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import jsonschema

from . import sections
from .loader import LoadError, load_yaml
from .problems import Problem, ValuesError, did_you_mean, format_path
from .problems import describe_value as _describe
from .schema import SCHEMA_RESOURCE, file_schema  # noqa: F401  (values.file_schema)


def schema() -> dict[str, Any]:
    """The values JSON Schema: the shipped file plus what registered sections add
    (``sections.schema``)."""
    return sections.schema()


def _validator() -> jsonschema.protocols.Validator:
    return sections.validator()


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _sexagesimal_hint(value: Any, sch: dict) -> str:
    """For a time written unquoted where a string like ``HH:MM:SS`` is expected: YAML 1.1
    reads ``12:00:00`` as the base-60 number 43200; say what was written and to quote it."""
    timelike = ":" in str(sch.get("pattern", "")) or "HH:MM" in str(sch.get("description", ""))
    if not timelike or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return ""
    parts = []
    while value:
        value, rest = divmod(value, 60)
        parts.insert(0, rest)
    written = ":".join([str(parts[0])] + [f"{p:02d}" for p in parts[1:]])
    parts = [0] * (3 - len(parts)) + parts  # HH:MM:SS at least
    meant = ":".join([str(parts[0])] + [f"{p:02d}" for p in parts[1:]])
    return f' (YAML reads an unquoted {written} as a base-60 number); quote it: "{meant}"'


def _problems_for(error: jsonschema.ValidationError) -> list[Problem]:
    path = list(error.absolute_path)
    where = format_path(path)
    v, inst, sch = error.validator, error.instance, error.schema
    if v == "additionalProperties" and isinstance(inst, dict):
        known = set(sch.get("properties", {}))
        extra = [k for k in inst if k not in known]
        if sch.get("additionalProperties") is False:
            return [
                Problem(
                    format_path(path + [k]),
                    f"unknown key {k!r}{did_you_mean(str(k), known)}",
                )
                for k in extra
            ]
    if v == "required":
        missing = [k for k in error.validator_value if k not in inst]
        return [Problem(format_path(path + [k]), "missing required key") for k in missing]
    if v == "type":
        want = error.validator_value
        wants = [want] if isinstance(want, str) else list(want)
        expected = " or ".join(_TYPE_NAMES.get(w, w) for w in wants)
        hint = _sexagesimal_hint(inst, sch) if "string" in wants else ""
        return [Problem(where, f"must be {expected}, got {_describe(inst)}{hint}")]
    if v == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        hint = did_you_mean(str(inst), [str(o) for o in error.validator_value])
        return [Problem(where, f"must be one of {options}; got {_describe(inst)}{hint}")]
    if v == "minimum":
        return [Problem(where, f"must be >= {error.validator_value}, got {inst}")]
    if v == "maximum":
        return [Problem(where, f"must be <= {error.validator_value}, got {inst}")]
    if v == "exclusiveMinimum":
        return [Problem(where, f"must be > {error.validator_value}, got {inst}")]
    if v == "pattern":
        hint = sch.get("x-hint") or "see docs/values.md for the expected form"
        return [Problem(where, f"{_describe(inst)} is not valid here; {hint}")]
    if v == "minLength":
        return [Problem(where, "must not be empty")]
    if v == "minItems":
        return [Problem(where, f"must list at least {error.validator_value} item(s)")]
    if v == "uniqueItems":
        return [Problem(where, "items must be unique")]
    if v in ("anyOf", "oneOf"):
        if "env" in str(sch) and "file" in str(sch):
            return [
                Problem(
                    where,
                    "a secret must be a string, {env: VARIABLE} or {file: PATH}; "
                    f"got {_describe(inst)}",
                )
            ]
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            return _problems_for(best)
    return [Problem(where, error.message)]


def parse_text(text: str | bytes, source: str = "values") -> dict[str, Any]:
    """Parse YAML text into a values mapping; raise :class:`ValuesError` when it is not one."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValuesError(
                [Problem("", f"{source}: not UTF-8 text (byte {e.start}: {e.reason})")], source
            ) from None
    try:
        data = load_yaml(text, source)
    except LoadError as e:
        partial = e.data if isinstance(e.data, dict) else None
        raise ValuesError(e.problems, source, partial) from None
    if data is None:
        raise ValuesError(
            [Problem("", f"{source}: the file is empty; expected a mapping of values")], source
        )
    if not isinstance(data, dict):
        raise ValuesError(
            [
                Problem(
                    "", f"{source}: the top level must be a mapping of keys, got {_describe(data)}"
                )
            ],
            source,
        )
    return data


def all_problems(error: ValuesError, check=None) -> list[Problem]:
    """The loader's problems in ``error`` plus what ``check`` (default :func:`validate`) finds
    in the rest of the document (``error.partial``), leaving out problems under a key the
    loader already named: every mistake of a file in one report."""
    if error.partial is None:
        return list(error.problems)
    seen = {p.path for p in error.problems}
    try:
        more = (check or validate)(error.partial)
    except ValuesError as again:
        more = again.problems
    return sorted(set(error.problems) | {p for p in more if not covered(p.path, seen)})


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and parse a values file (no schema validation)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValuesError([Problem("", f"{path}: cannot read ({e.strerror})")], str(path)) from None
    return parse_text(raw, str(path))


def _semantic_problems(
    values: dict[str, Any], partial: bool = False, extra_checks: tuple = ()
) -> list[Problem]:
    """Cross-key checks a JSON Schema cannot express (references, uniqueness).

    ``partial``: the document failed the schema; a component check that trips over its shape
    is skipped (its problems are reported once the schema problems are fixed).
    """
    from . import sections

    problems: list[Problem] = []
    values = fill_defaults(values)
    for check in [owner.check for owner in sections.owners()] + list(extra_checks):
        try:
            problems.extend(check(values))
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            if not partial:
                raise
    return problems


_EMPTY = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": int,
    "boolean": bool,
}


def _neutralised(values: dict, errors: list[jsonschema.ValidationError]) -> dict:
    """A copy of ``values`` in which each value of the wrong type is replaced by an empty one
    of the right type, so cross-key checks can run on a document that fails the schema."""
    out = copy.deepcopy(values)
    for error in errors:
        if error.validator != "type" or not error.absolute_path:
            continue
        want = error.validator_value
        want = want if isinstance(want, str) else want[0]
        *parents, last = list(error.absolute_path)
        node = out
        try:
            for p in parents:
                node = node[p]
            node[last] = _EMPTY.get(want, dict)()
        except (KeyError, IndexError, TypeError):
            pass
    return out


def covered(path: str, by: set[str]) -> bool:
    """Whether ``path`` is one of ``by`` or lies under one of them."""
    return any(path == b or path.startswith((b + ".", b + "[")) for b in by)


def validate(values: Any, extra_checks: tuple = ()) -> list[Problem]:
    """Every problem with ``values``, schema and cross-key together, sorted by key path.

    Cross-key checks also run when the schema finds problems (on a copy with ill-typed values
    neutralised); a cross-key problem about a key that already has a schema problem is left out.
    ``extra_checks`` (``values -> [Problem]``, e.g. a deployment target's) run with the owners'.
    """
    if not isinstance(values, dict):
        return [Problem("", f"the top level must be a mapping of keys, got {_describe(values)}")]
    problems: set[Problem] = set()
    errors = list(_validator().iter_errors(values))
    for error in errors:
        problems.update(_problems_for(error))
    if not errors:
        problems.update(_semantic_problems(values, extra_checks=extra_checks))
        return sorted(problems)
    bad_paths = {p.path for p in problems}
    try:
        cross = _semantic_problems(
            _neutralised(values, errors), partial=True, extra_checks=extra_checks
        )
    except RecursionError:
        cross = []
    problems.update(p for p in cross if not covered(p.path, bad_paths))
    return sorted(problems)


def warnings(values: Any) -> list[Problem]:
    """Findings that do not stop the hub (e.g. a key nobody defines inside a profile entry,
    ignored as KubeSpawner ignores it), from each section owner's optional ``warn(values)``; sorted."""
    if not isinstance(values, dict):
        return []
    from . import sections

    filled = fill_defaults(values)  # owners read values as build and check do
    found: set[Problem] = set()
    for m in sections.owners():
        warn = getattr(m, "warn", None)
        if warn is None:
            continue
        try:
            found.update(warn(filled))
        except (AttributeError, KeyError, TypeError, ValueError, IndexError):
            continue  # a document of the wrong shape: validate() reports that
    return sorted(found)


def load(path_or_dict: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """Load (if a path) and validate values; raise :class:`ValuesError` listing all problems."""
    if isinstance(path_or_dict, dict):
        values, source = path_or_dict, "values"
    else:
        values, source = load_file(path_or_dict), str(path_or_dict)
    problems = validate(values)
    if problems:
        raise ValuesError(problems, source)
    return fill_defaults(values)


# -------------------------------------------------------------------- schema defaults


def resolve_ref(node: dict, root: dict) -> dict:
    """``node`` with a local ``$ref`` replaced by its target (sibling keys win)."""
    seen = 0
    while "$ref" in node and seen < 10:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = dict(root["$defs"][name])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        node = target
        seen += 1
    return node


def _fill(node: dict, instance: Any, root: dict) -> None:
    node = resolve_ref(node, root)
    if not isinstance(instance, dict):
        return
    for key, sub in node.get("properties", {}).items():
        rsub = resolve_ref(sub, root)
        if key not in instance and "default" in rsub:
            instance[key] = copy.deepcopy(rsub["default"])
        if key in instance:
            _fill(sub, instance[key], root)


def fill_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with every schema default filled in, so builders and checks read
    ``values["hub"]["port"]`` instead of repeating the default. A mapping the schema gives
    ``"default": {}`` (``hub``, ``backend``, ``culling``...) is created when absent; others
    (``auth``, ``auth.dev``, ``backend.slurm``) stay absent, since their presence means
    something. Lists (``images``, ``profiles``) and free-form mappings are left as written.
    Idempotent."""
    root = schema()
    out = copy.deepcopy(values)
    _fill(root, out, root)
    return out


def defaults(path: str) -> dict[str, Any]:
    """The schema defaults of the mapping at ``path`` (``"auth.dev"``), for a section that
    is absent from the values but used anyway (the demo provider's port)."""
    root = schema()
    node = root
    for part in path.split("."):
        node = resolve_ref(resolve_ref(node, root)["properties"][part], root)
    out: dict[str, Any] = {}
    _fill(node, out, root)
    return out


def clear_caches() -> None:
    """Forget composed schemas and validators (``sections.clear_caches``)."""
    sections.clear_caches()
