"""The code blocks of the users' pages, and what the docs test does with each (pure: text in,
steps out; ``tests/test_doc_blocks.py`` has the table tests and runs the steps).

The convention the pages follow (docs/developers.md, "Users' code blocks"):

- a fenced block in ``python`` runs in a kernel of the user's server, one in ``sh``/``bash``
  in that server's environment as the user, top to bottom, one kernel per page;
- a block preceded by ``<!-- not-run: REASON -->`` is not run (Slurm only, operator commands,
  placeholders); the reason is required;
- a block preceded by ``<!-- output -->`` is the output the block before it prints, compared
  exactly (trailing blank lines aside);
- any other block (``yaml``, no language, ...) is a mistake the test reports with its line, so
  a new block cannot slip through unrun and unmarked.

Only blank lines may stand between a marker and its block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# the users' pages (README.md's only block is the operator's `make up`, marked as such)
USER_PAGES = (
    "README.md",
    "docs/users.md",
    "docs/first-day.md",
    "docs/kernels.md",
    "docs/dask.md",
    "docs/tokens.md",
)

RUN_LANGUAGES = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh"}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-run|output)\b(?P<rest>.*?)-->\s*$")


class DocBlockError(ValueError):
    """A page that breaks the convention: names the line and what is wrong."""


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str  # the info string's first word, lower case ("" when none)
    code: str
    not_run: str | None = None  # the reason of <!-- not-run: REASON -->
    output: bool = False  # preceded by <!-- output -->


@dataclass(frozen=True)
class Step:
    kind: str  # "python" | "sh"
    code: str
    line: int
    expected: str | None = None  # the output block's text, when the page shows one


def _marker(line: str, number: int) -> tuple[str, str | None] | None:
    m = _MARKER.match(line)
    if not m:
        return None
    kind, rest = m["kind"], m["rest"].strip()
    if kind == "output":
        if rest:
            raise DocBlockError(f"line {number}: <!-- output --> takes nothing, got {rest!r}")
        return kind, None
    reason = rest[1:].strip() if rest.startswith(":") else ""
    if not reason:
        raise DocBlockError(
            f"line {number}: <!-- not-run --> needs a reason: <!-- not-run: REASON -->"
        )
    return kind, reason


def blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown page with the marker before it."""
    lines = text.splitlines()
    found: list[Block] = []
    pending: tuple[str, str | None, int] | None = None  # a marker waiting for its block
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        fence = _FENCE.match(line)
        if fence is None:
            marker = _marker(line, number)
            if marker is not None:
                if pending is not None:
                    raise DocBlockError(f"line {pending[2]}: a marker with no block after it")
                pending = (*marker, number)
            elif line.strip() and pending is not None:
                raise DocBlockError(f"line {pending[2]}: a marker with no block after it")
            i += 1
            continue
        indent, mark = fence["indent"], fence["fence"]
        close = re.compile(r"^[ \t]*" + re.escape(mark[0]) + "{" + str(len(mark)) + r",}\s*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not close.match(lines[i]):
            raw = lines[i]
            body.append(raw[len(indent) :] if raw.startswith(indent) else raw.lstrip())
            i += 1
        if i == len(lines):
            raise DocBlockError(f"line {number}: the block opened here is never closed")
        i += 1
        info = fence["info"].strip().split()
        kind, reason = (pending[0], pending[1]) if pending else (None, None)
        found.append(
            Block(
                line=number,
                lang=info[0].lower() if info else "",
                code="\n".join(body) + ("\n" if body else ""),
                not_run=reason if kind == "not-run" else None,
                output=kind == "output",
            )
        )
        pending = None
    if pending is not None:
        raise DocBlockError(f"line {pending[2]}: a marker with no block after it")
    return found


def steps(found: list[Block]) -> tuple[list[Step], list[str]]:
    """What to run, in page order, and the problems (blocks neither run nor marked, output
    blocks with nothing run before them), each naming the line."""
    out: list[Step] = []
    problems: list[str] = []
    previous: Step | None = None  # the run block an output block may belong to
    for b in found:
        if b.output:
            if previous is None or previous.expected is not None:
                problems.append(f"line {b.line}: <!-- output --> follows no block that runs")
            else:
                out[-1] = previous = Step(previous.kind, previous.code, previous.line, b.code)
            continue
        if b.not_run is not None:
            previous = None
            continue
        kind = RUN_LANGUAGES.get(b.lang)
        if kind is None:
            problems.append(
                f"line {b.line}: a {b.lang or 'plain'} block is neither run (python, sh) nor"
                " marked <!-- not-run: REASON -->"
            )
            previous = None
            continue
        previous = Step(kind, b.code, b.line)
        out.append(previous)
    return out, problems


def same_output(expected: str, printed: str) -> bool:
    """The page's output block against what ran: equal, line by line, trailing spaces and
    blank lines at the end aside."""

    def norm(s: str) -> list[str]:
        return [line.rstrip() for line in s.rstrip().splitlines()]

    return norm(expected) == norm(printed)


# -- links between the pages (the moves between users' and operators' pages keep them true) ---

_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings (not of lines inside code blocks)."""
    found: set[str] = set()
    fence = None
    for line in text.splitlines():
        m = _FENCE.match(line)
        if m:
            if fence is None:
                fence = m["fence"]
            elif m["fence"].startswith(fence) and not m["info"].strip():  # same kind, as long
                fence = None
            continue
        heading = _HEADING.match(line) if fence is None else None
        if heading:
            found.add(anchor(heading["title"]))
    return found


def relative_links(text: str) -> list[tuple[str, str]]:
    """``(file, anchor)`` of every relative Markdown link (file ``""``: this page)."""
    out = []
    for m in _LINK.finditer(text):
        target = m["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
            continue
        file, _, fragment = target.partition("#")
        out.append((file, fragment))
    return out
