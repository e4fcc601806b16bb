"""A YAML loader for values files that an operator's mistake or a hostile file cannot fool.

``load_yaml(text, source)`` turns the text of one YAML document into plain Python data
(dicts with string keys, lists, strings, numbers, booleans, null, dates) or raises
:class:`LoadError` listing every problem as a :class:`~afhub.hub_config.values.Problem` named by
key path. It reads the parser's event stream itself instead of PyYAML's recursive composer, so:

- a duplicate key is an error naming the key path and both line numbers (plain PyYAML keeps the
  last one silently, which can turn ``allowed_groups: [gpu]`` into ``allowed_groups: []``);
- alias expansion is bounded (:data:`MAX_NODES` nodes in the expanded document; a "billion laughs"
  file stops at the limit instead of filling memory), recursive aliases are refused;
- nesting deeper than :data:`MAX_DEPTH` (aliases included) stops the load, before any recursion;
- control characters (C0 except tab and newline, DEL, C1, Unicode bidirectional overrides) in
  keys or values are errors, whether written raw or as escapes like ``"\\0"``;
- keys must be strings: ``on:``/``yes:``/``1:``/``null:`` (which YAML reads as booleans, numbers
  or null) and complex keys are errors that say to quote the key;
- only the standard tags are accepted (no ``!!python/...``, ``!!set``, ``!!binary``);
- files larger than :data:`MAX_BYTES` are refused before parsing.

Merge keys (``<<: *defaults``) work as in PyYAML's safe loader. Time and memory are bounded by
the limits above. This module does no I/O and knows nothing about the values schema.
"""

from __future__ import annotations

import bisect
import copy
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import yaml

from .problems import Problem, describe_value, format_path

MAX_BYTES = 1024 * 1024
MAX_DEPTH = 50
MAX_NODES = 100_000

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_resolver = yaml.resolver.Resolver()
_constructor = yaml.constructor.SafeConstructor()

Y = "tag:yaml.org,2002:"
SCALAR_TAGS = {Y + t for t in ("null", "bool", "int", "float", "str", "timestamp")}
MAP_TAGS = {None, "!", Y + "map"}
SEQ_TAGS = {None, "!", Y + "seq"}

_BIDI = {0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069}


def bad_char(ch: str) -> bool:
    """A character values may not contain: C0 controls but tab and newline, DEL, C1, bidi."""
    o = ord(ch)
    return (o < 0x20 and ch not in "\t\n") or 0x7F <= o <= 0x9F or o in _BIDI


_C0_NAMES = {0: "NUL", 7: "BEL", 8: "BACKSPACE", 0x0D: "CARRIAGE RETURN", 0x1B: "ESC"}


def _char_name(ch: str) -> str:
    o = ord(ch)
    if 0x2000 <= o:
        name = unicodedata.name(ch, "")
    elif o < 0x20:
        name = _C0_NAMES.get(o, "")
    else:
        name = "DELETE" if o == 0x7F else "C1 control"
    return f"U+{o:04X}" + (f" ({name})" if name else "")


class LoadError(ValueError):
    """The text is not a usable values document; ``problems`` lists every reason found.

    ``data`` is the document as far as it could be read safely (without the duplicate keys,
    non-text keys and unsupported values named in ``problems``), or None when reading stopped
    (syntax error, a limit): ``afhub check`` validates it to report the other mistakes too.
    """

    def __init__(self, problems: list[Problem], data: Any = None):
        self.problems = problems
        self.data = data
        super().__init__("\n".join(str(p) for p in problems))


class _Stop(Exception):
    """A problem after which the rest of the document cannot be read safely."""


@dataclass
class _Frame:
    kind: str  # "map" | "seq" | "skip" (a complex key: its events are read and dropped)
    obj: Any
    path: list
    anchor: str | None
    nodes_at_start: int
    height: int = 0  # of the deepest child, in levels
    key: Any = None  # map: the key waiting for its value (None: next scalar is a key)
    key_line: int = 0
    has_key: bool = False
    shown_key: str = ""  # the key as written, for the paths of problems under it
    key_lines: dict = field(default_factory=dict)
    merges: list = field(default_factory=list)
    skip_depth: int = 0
    flow: bool = False  # written in flow style ([a, b] or {a: b})


class _Builder:
    def __init__(self, text: str, source: str):
        self.source = source
        self.problems: list[Problem] = []
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # name -> (value, nodes, height)
        self.open_anchors: set[str] = set()
        self.nodes = 0
        self.root: Any = None
        self.documents = 0
        self.raw_bad: list[tuple[int, str]] = []  # (char index, char) of raw control chars
        self.raw_reported: set[int] = set()
        self.text = self._scrub(text)
        self.raw_positions = [i for i, _ in self.raw_bad]

    # -- text ---------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Replace raw control characters (which the YAML reader refuses without saying where
        in the document they are) by U+FFFD, remembering where they were."""
        out = None
        for i, ch in enumerate(text):
            if bad_char(ch) and ch not in "\r":
                self.raw_bad.append((i, ch))
                if out is None:
                    out = list(text)
                out[i] = "\ufffd"
        return text if out is None else "".join(out)

    def _line_col(self, index: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, index) + 1
        col = index - (self.text.rfind("\n", 0, index) + 1) + 1
        return line, col

    # -- problems -----------------------------------------------------------------------------

    def add(self, path: list, message: str) -> None:
        where = format_path(path)
        self.problems.append(Problem(where, message) if where else Problem("", message))

    def stop(self, path: list, message: str) -> None:
        self.add(path, message)
        raise _Stop

    def _check_chars(self, path: list, value: str, start: int, end: int, what: str) -> None:
        lo = bisect.bisect_left(self.raw_positions, start)
        hi = bisect.bisect_left(self.raw_positions, end)
        found = []
        for i, ch in self.raw_bad[lo:hi]:
            self.raw_reported.add(i)
            line, col = self._line_col(i)
            found.append(f"{_char_name(ch)} at line {line}, column {col}")
        if not found:
            found = [_char_name(ch) for ch in dict.fromkeys(c for c in value if bad_char(c))]
        if found:
            self.add(
                path,
                f"{what} contains the control character {', '.join(found[:3])}"
                f"{' and more' if len(found) > 3 else ''}; remove it",
            )

    # -- nodes --------------------------------------------------------------------------------

    def _count(self, n: int, path: list) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            self.stop(
                path,
                f"the document expands to more than {MAX_NODES} values (aliases included); "
                "an alias bomb, or a file too large to be a values file",
            )

    def _depth_check(self, path: list, extra: int) -> None:
        if len(self.stack) + extra > MAX_DEPTH:
            self.stop(path[:4], f"nested more than {MAX_DEPTH} levels deep (under this key)")

    def _syntax_error_path(self, e: yaml.YAMLError) -> list:
        """Where a syntax error is: in the node being read, except between the items of a
        block list, where the parser only notices a badly indented line of an item when it
        looks for the next ``-``: that line belongs to the item just read (``profiles[1]``, not
        the ``profiles[2]`` that does not exist)."""
        if not self.stack:
            return []
        top = self.stack[-1]
        if (
            top.kind == "seq"
            and top.obj
            and not top.flow
            and isinstance(e, yaml.parser.ParserError)
        ):
            return top.path + [len(top.obj) - 1]
        return self._child_path()

    def _child_path(self) -> list:
        if not self.stack:
            return []
        top = self.stack[-1]
        if top.kind == "seq":
            return top.path + [len(top.obj)]
        if top.kind == "map" and top.has_key:
            return top.path + [top.key if isinstance(top.key, str) else top.shown_key]
        return list(top.path)

    def _attach(self, value: Any, height: int, line: int) -> None:
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.height = max(top.height, height)
        if top.kind == "seq":
            top.obj.append(value)
            return
        if top.kind != "map":
            return
        key, top.key, top.has_key = top.key, None, False
        if key is _MERGE:
            top.merges.append((value, line))
        elif key is not _INVALID:
            top.obj[key] = value

    def _key(self, key: Any, raw: str, line: int, path: list) -> None:
        top = self.stack[-1]
        top.has_key, top.key_line, top.shown_key = True, line, raw
        if key is _MERGE:
            top.key = _MERGE
            return
        if not isinstance(key, str):
            shown = _describe_key(key)
            self.add(
                path + [raw],
                f"keys must be text, but YAML reads {raw!r} (line {line}) as {shown}; "
                f'quote it: "{raw}"',
            )
            # the rest of the check sees what the operator meant: the key as written
            if raw in top.key_lines or raw.startswith("*"):
                top.key = _INVALID
                return
            key = raw
        if key in top.key_lines:
            self.add(
                path + [key],
                f"duplicate key: first at line {top.key_lines[key]}, again at line {line} "
                "(remove one; YAML would silently keep only the last)",
            )
            top.key = _INVALID
            return
        top.key_lines[key] = line
        top.key = key

    def _scalar(self, ev) -> None:
        top = self.stack[-1] if self.stack else None
        is_key = top is not None and top.kind == "map" and not top.has_key
        if top is not None and top.kind == "skip":
            return
        path = self._child_path() if not is_key else list(top.path)
        line = ev.start_mark.line + 1
        implicit = ev.implicit
        tag = ev.tag
        if tag is None or tag == "!":
            tag = (
                _resolver.resolve(yaml.ScalarNode, ev.value, implicit) if tag is None else Y + "str"
            )
        if tag == Y + "merge" and is_key:
            self._key(_MERGE, ev.value, line, path)
            return
        if tag not in SCALAR_TAGS:
            self.add(
                path, f"unsupported YAML tag {_short(ev.tag)} (line {line}); write plain values"
            )
            value: Any = _INVALID
        else:
            node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)
            try:
                value = _constructor.construct_object(node)
            except (yaml.YAMLError, ValueError, OverflowError) as e:
                self.add(path, f"cannot read {ev.value!r} as {tag.rsplit(':', 1)[-1]}: {e}")
                value = _INVALID
        what = "the key" if is_key else "the value"
        cpath = path + [ev.value] if is_key else path
        self._check_chars(cpath, ev.value, ev.start_mark.index, ev.end_mark.index, what)
        self._count(1, path)
        if is_key:
            if value is _INVALID:
                top.has_key, top.key = True, _INVALID
            else:
                self._key(value, ev.value, line, path)
            return
        if ev.anchor:
            self.anchors[ev.anchor] = (value, 1, 0)
        self._attach(None if value is _INVALID else value, 0, line)

    def _alias(self, ev) -> None:
        top = self.stack[-1] if self.stack else None
        if top is not None and top.kind == "skip":
            return
        is_key = top is not None and top.kind == "map" and not top.has_key
        path = self._child_path() if not is_key else list(top.path)
        line = ev.start_mark.line + 1
        if ev.anchor in self.open_anchors:
            self.stop(path, f"alias *{ev.anchor} (line {line}) refers to a value containing it")
        if ev.anchor not in self.anchors:
            self.stop(
                path, f"alias *{ev.anchor} (line {line}) has no anchor &{ev.anchor} before it"
            )
        value, nodes, height = self.anchors[ev.anchor]
        self._count(nodes, path)
        self._depth_check(path, height)
        if is_key:
            if isinstance(value, (dict, list)):
                self.add(path, f"a key must be text, not an alias to a {type(value).__name__}")
                top.has_key, top.key = True, _INVALID
            else:
                self._key(value, f"*{ev.anchor}", line, path)
            return
        self._attach(copy.deepcopy(value), height, line)

    def _start(self, ev, kind: str) -> None:
        top = self.stack[-1] if self.stack else None
        line = ev.start_mark.line + 1
        if top is not None and top.kind == "skip":
            top.skip_depth += 1
            return
        if top is not None and top.kind == "map" and not top.has_key:
            self.add(top.path, f"a key must be text, not a {kind} (line {line})")
            self.stack.append(_Frame("skip", None, top.path, None, self.nodes))
            return
        path = self._child_path()
        allowed = MAP_TAGS if kind == "mapping" else SEQ_TAGS
        if ev.tag not in allowed:
            self.add(
                path, f"unsupported YAML tag {_short(ev.tag)} (line {line}); write plain values"
            )
        self._depth_check(path, 1)
        self._count(1, path)
        if ev.anchor:
            self.open_anchors.add(ev.anchor)
        frame = _Frame(
            "map" if kind == "mapping" else "seq",
            {} if kind == "mapping" else [],
            path,
            ev.anchor,
            self.nodes,
        )
        frame.key_line = line
        frame.flow = bool(ev.flow_style)
        self.stack.append(frame)

    def _end(self, ev) -> None:
        frame = self.stack[-1]
        if frame.kind == "skip":
            if frame.skip_depth:
                frame.skip_depth -= 1
                return
            self.stack.pop()
            top = self.stack[-1]
            top.has_key, top.key = True, _INVALID
            return
        self.stack.pop()
        if frame.kind == "map" and frame.merges:
            self._merge(frame)
        height = frame.height + 1
        if frame.anchor:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (frame.obj, self.nodes - frame.nodes_at_start + 1, height)
        self._attach(frame.obj, height, frame.key_line)

    def _merge(self, frame: _Frame) -> None:
        """``<<`` keys: merged mappings fill in keys the mapping does not set itself; with a
        list of mappings, earlier ones win (PyYAML's and the YAML merge-key spec's order)."""
        extra: dict = {}
        for value, line in frame.merges:
            sources = value if isinstance(value, list) else [value]
            for src in sources:
                if not isinstance(src, dict):
                    self.add(
                        frame.path + ["<<"],
                        f"a merge key (line {line}) takes a mapping or a list of mappings",
                    )
                    continue
                for k, v in src.items():
                    extra.setdefault(k, v)
        for k, v in extra.items():
            frame.obj.setdefault(k, v)

    # -- driver -------------------------------------------------------------------------------

    def run(self) -> Any:
        handlers = {
            yaml.ScalarEvent: self._scalar,
            yaml.AliasEvent: self._alias,
            yaml.MappingStartEvent: lambda ev: self._start(ev, "mapping"),
            yaml.SequenceStartEvent: lambda ev: self._start(ev, "list"),
            yaml.MappingEndEvent: self._end,
            yaml.SequenceEndEvent: self._end,
        }
        try:
            for ev in yaml.parse(self.text, Loader=_Loader):
                if isinstance(ev, yaml.DocumentStartEvent):
                    self.documents += 1
                    if self.documents > 1:
                        line = ev.start_mark.line + 1
                        self.stop(
                            [],
                            f"{self.source}: a second YAML document starts at line {line}; "
                            "a values file is one document (remove the '---')",
                        )
                    continue
                handler = handlers.get(type(ev))
                if handler is not None:
                    handler(ev)
        except _Stop:
            return None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            reason = getattr(e, "problem", None) or str(e).splitlines()[0]
            path = self._syntax_error_path(e)
            self.add(
                path, f"{'' if path else self.source + ': '}YAML syntax error{where}: {reason}"
            )
            return None
        for i, ch in self.raw_bad:
            if i not in self.raw_reported:
                line, col = self._line_col(i)
                self.add(
                    [],
                    f"{self.source}: control character {_char_name(ch)} at line {line}, "
                    f"column {col}; remove it",
                )
        return self.root


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_MERGE = _Marker("<<")
_INVALID = _Marker("<invalid>")


def _short(tag: str | None) -> str:
    return "!!" + tag[len(Y) :] if tag and tag.startswith(Y) else str(tag)


def _describe_key(key: Any) -> str:
    return "null" if key is None else f"the {describe_value(key)}"


def load_yaml(text: str, source: str = "values") -> Any:
    """Plain data from one YAML document; raise :class:`LoadError` listing every problem."""
    if len(text) > MAX_BYTES:
        raise LoadError(
            [
                Problem(
                    "",
                    f"{source}: {len(text)} characters; a values file may have at most "
                    f"{MAX_BYTES} (1 MiB)",
                )
            ]
        )
    builder = _Builder(text, source)
    data = builder.run()
    if builder.problems:
        seen: dict[Problem, None] = dict.fromkeys(builder.problems)
        raise LoadError(list(seen), data)
    return data


__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "LoadError", "bad_char", "load_yaml"]
