"""Load and validate an afhub values file.

Pure functions only: text or a dict in, a dict or a list of :class:`Problem` out.
Nothing here reads the environment, starts processes or touches a traitlets Config
(see ``apply.py`` for that). Every problem names the key path it is about, in the
``profiles[2].resources.gpu.count`` form operators see in their YAML.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

SCHEMA_RESOURCE = "values.schema.json"


class ValuesError(ValueError):
    """A values file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem], source: str = "values"):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, order=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The values JSON Schema shipped with the package."""
    text = resources.files("afhub.hub_config").joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    return cls(schema(), format_checker=None)


def format_path(parts) -> str:
    """``['profiles', 2, 'gpu']`` -> ``profiles[2].gpu``."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _did_you_mean(word: str, candidates) -> str:
    match = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


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
                    f"unknown key {k!r}{_did_you_mean(str(k), known)}",
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
        return [Problem(where, f"must be {expected}, got {_describe(inst)}")]
    if v == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        hint = _did_you_mean(str(inst), [str(o) for o in error.validator_value])
        return [Problem(where, f"must be one of {options}; got {_describe(inst)}{hint}")]
    if v == "minimum":
        return [Problem(where, f"must be >= {error.validator_value}, got {inst}")]
    if v == "maximum":
        return [Problem(where, f"must be <= {error.validator_value}, got {inst}")]
    if v == "exclusiveMinimum":
        return [Problem(where, f"must be > {error.validator_value}, got {inst}")]
    if v == "pattern":
        label = sch.get("description", "").split(".")[0]
        hint = f" ({label})" if label else ""
        return [Problem(where, f"{_describe(inst)} does not match {error.validator_value!r}{hint}")]
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
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValuesError(
            [Problem("", f"{source}: YAML syntax error{where}: {reason}")], source
        ) from None
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


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and parse a values file (no schema validation)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ValuesError([Problem("", f"{path}: cannot read ({e.strerror})")], str(path)) from None
    return parse_text(raw, str(path))


def _semantic_problems(values: dict[str, Any]) -> list[Problem]:
    """Cross-key checks a JSON Schema cannot express (references, uniqueness)."""
    problems: list[Problem] = []
    images = values.get("images") or []
    names = [img.get("name") for img in images]
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            problems.append(Problem(f"images[{i}].name", f"duplicate image name {name!r}"))
        seen.add(name)
    auth = values.get("auth") or {}
    if auth and auth.get("provider", "generic") != "dev":
        if not auth.get("client_id"):
            problems.append(
                Problem("auth.client_id", "missing required key (needed unless provider is dev)")
            )
        if not (auth.get("issuer") or (auth.get("authorize_url") and auth.get("token_url"))):
            problems.append(
                Problem("auth.issuer", "missing required key (or give authorize_url and token_url)")
            )
    if "dev" in auth and auth.get("provider", "generic") != "dev":
        problems.append(Problem("auth.dev", "only used when auth.provider is dev"))
    kind = (values.get("backend") or {}).get("type", "local")
    if kind in NOT_YET_AVAILABLE:
        problems.append(
            Problem(
                "backend.type",
                f"the {kind} backend is not available in this afhub release yet; use local or kubernetes",
            )
        )
    if (values.get("dask") or {}).get("enabled"):
        problems.append(
            Problem(
                "dask.enabled",
                "Dask Gateway is not wired in this afhub release yet; leave it false",
            )
        )
    for module in component_modules():
        check = getattr(module, "check", None)
        if check is not None:
            problems.extend(check(values))
    return problems


COMPONENTS = ("spawner", "authenticator", "server_ext")
# Backends the schema describes but whose spawner classes are not shipped yet.
NOT_YET_AVAILABLE = ("slurm", "htcondor")


@lru_cache(maxsize=1)
def component_modules() -> tuple:
    """The ``afhub.<component>.hub_values`` modules that exist, in a fixed order.

    Each has ``build(values, plan)`` (see apply.py) and may have ``check(values)`` returning
    cross-key :class:`Problem` s (e.g. a profile naming an image that is not in the catalogue).
    """
    import importlib

    found = []
    for comp in COMPONENTS:
        name = f"afhub.{comp}.hub_values"
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return tuple(found)


def validate(values: Any) -> list[Problem]:
    """Every problem with ``values``, sorted by key path; empty when valid."""
    if not isinstance(values, dict):
        return [Problem("", f"the top level must be a mapping of keys, got {_describe(values)}")]
    problems: set[Problem] = set()
    for error in _validator().iter_errors(values):
        problems.update(_problems_for(error))
    if not problems:
        problems.update(_semantic_problems(values))
    return sorted(problems)


def load(path_or_dict: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """Load (if a path) and validate values; raise :class:`ValuesError` listing all problems."""
    if isinstance(path_or_dict, dict):
        values, source = path_or_dict, "values"
    else:
        values, source = load_file(path_or_dict), str(path_or_dict)
    problems = validate(values)
    if problems:
        raise ValuesError(problems, source)
    return values
