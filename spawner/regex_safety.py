"""Catastrophic backtracking in operators' ``validation_regex``: a static check. Pure.

Python's ``re`` backtracks, and a pattern like ``(a+)+$`` takes exponential time on a short
non-matching input (about 40 characters block the hub's event loop for minutes). afhub refuses
such patterns at ``afhub check`` and never runs them on user input (the spawner refuses the
option instead); user input is also length-capped before any match.

The rule is conservative (a false alarm asks the operator to rewrite a pattern; a miss could
stall the hub). A repetition without an upper bound is dangerous when its body can match the
same text in more than one way:

- the body holds another unbounded repetition, unless a required character the inner
  repetition cannot match delimits it (``([a-z0-9]+\\.)*`` is fine, ``(a+)+``, ``(\\w+\\s?)*``
  are not);
- the body is an alternation whose branches can start with the same character (``(a|ab)*``,
  ``(\\w|\\d)+``);
- the body can match the empty string (``(a?)*``).

Character sets are compared on the first 256 code points (an approximation that errs towards
"overlapping" for categories such as ``\\w``).
"""

from __future__ import annotations

import functools
import re

try:  # Python >= 3.11
    from re import _constants as C
    from re import _parser as P
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as C
    import sre_parse as P

_ALL = frozenset(range(256))
_CATEGORIES = {
    C.CATEGORY_DIGIT: frozenset(ord(c) for c in "0123456789"),
    C.CATEGORY_WORD: frozenset(i for i in range(256) if re.match(r"\w", chr(i))),
    C.CATEGORY_SPACE: frozenset(i for i in range(256) if chr(i).isspace()),
}
_CATEGORIES[C.CATEGORY_NOT_DIGIT] = _ALL - _CATEGORIES[C.CATEGORY_DIGIT]
_CATEGORIES[C.CATEGORY_NOT_WORD] = _ALL - _CATEGORIES[C.CATEGORY_WORD]
_CATEGORIES[C.CATEGORY_NOT_SPACE] = _ALL - _CATEGORIES[C.CATEGORY_SPACE]
_REPEATS = {C.MAX_REPEAT, C.MIN_REPEAT}
_POSSESSIVE = getattr(C, "POSSESSIVE_REPEAT", None)


@functools.lru_cache(maxsize=256)
def backtracking_problem(pattern: str) -> str | None:
    """Why ``pattern`` could backtrack catastrophically (``None``: it cannot, by this rule).
    A pattern that does not compile is not this function's business (``None``)."""
    try:
        tree = P.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    found = _walk(list(tree))
    if found is None:
        return None
    return (
        f"could take a very long time on some inputs ({found}); rewrite it so that each "
        "part of the text can be matched only one way, e.g. [a-z]+(\\.[a-z]+)* instead of "
        "([a-z]+\\.?)+"
    )


def _walk(seq: list) -> str | None:
    why = _adjacent_repeats(seq)
    if why:
        return why
    for op, av in seq:
        if op in _REPEATS:
            lo, hi, body = av
            body = list(body)
            if hi == C.MAXREPEAT or hi >= 3:
                why = _ambiguous(body)
                if why:
                    return why
            why = _walk(body)
            if why:
                return why
        elif op == _POSSESSIVE:
            continue  # never backtracks into its body
        elif op == C.SUBPATTERN:
            why = _walk(list(av[-1]))
            if why:
                return why
        elif op == C.BRANCH:
            for alt in av[1]:
                why = _walk(list(alt))
                if why:
                    return why
        elif op in (C.ASSERT, C.ASSERT_NOT):
            why = _walk(list(av[1]))
            if why:
                return why
    return None


def _adjacent_repeats(seq: list) -> str | None:
    """Three unbounded repetitions of common characters with nothing between them that only
    one side can match (``\\w*\\w*\\w*x``: polynomial time of a high degree)."""
    run: list[frozenset] = []
    for item in seq:
        op, av = item
        if op in _REPEATS and av[1] == C.MAXREPEAT:
            run.append(_first_seq(list(av[2])))
            if len(run) >= 3 and frozenset.intersection(*run):
                return (
                    "three or more repetitions of the same characters in a row, like \\w*\\w*\\w*"
                )
        elif _required_char(item) and run:
            if _first(item).isdisjoint(frozenset.intersection(*run)):
                run = []
    return None


def _ambiguous(body: list) -> str | None:
    """Why an unbounded repetition of ``body`` can split a text in several ways."""
    while len(body) == 1 and body[0][0] == C.SUBPATTERN:
        body = list(body[0][1][-1])
    if _min_len(body) == 0:
        return "a repeated part can match the empty text"
    inner = _unbounded_inside(body)
    if inner:
        delimiters = [_first(item) for item in body if _required_char(item)]
        if not any(all(d.isdisjoint(cs) for cs in inner) for d in delimiters if d is not None):
            return "a repetition inside a repetition, like (a+)+"
    for op, av in body:
        if op == C.BRANCH:
            firsts = [_first_seq(list(alt)) for alt in av[1]]
            for i, a in enumerate(firsts):
                for b in firsts[i + 1 :]:
                    if a & b:
                        return "alternatives that can start alike inside a repetition, like (a|ab)*"
    return None


def _unbounded_inside(seq: list) -> list[frozenset]:
    """Character sets of the unbounded repetitions anywhere in ``seq``."""
    out = []
    for op, av in seq:
        if op in _REPEATS:
            if av[1] == C.MAXREPEAT:
                out.append(_first_seq(list(av[2])))
            out += _unbounded_inside(list(av[2]))
        elif op == C.SUBPATTERN:
            out += _unbounded_inside(list(av[-1]))
        elif op == C.BRANCH:
            for alt in av[1]:
                out += _unbounded_inside(list(alt))
    return out


def _required_char(item) -> bool:
    op, av = item
    return op in (C.LITERAL, C.NOT_LITERAL, C.IN, C.ANY) or (
        op in _REPEATS and av[0] >= 1 and _required_char_seq(list(av[2]))
    )


def _required_char_seq(seq: list) -> bool:
    return len(seq) == 1 and _required_char(seq[0])


def _first(item) -> frozenset | None:
    op, av = item
    if op == C.LITERAL:
        return frozenset([av]) if av < 256 else frozenset()
    if op == C.NOT_LITERAL:
        return _ALL - {av}
    if op == C.ANY:
        return _ALL
    if op == C.IN:
        return _charset(av)
    if op in _REPEATS:
        return _first_seq(list(av[2]))
    if op == C.SUBPATTERN:
        return _first_seq(list(av[-1]))
    if op == C.BRANCH:
        out = frozenset()
        for alt in av[1]:
            out |= _first_seq(list(alt))
        return out
    return None  # anchors, assertions: match no character


def _first_seq(seq: list) -> frozenset:
    """Characters a match of ``seq`` can start with (over-approximated)."""
    out = frozenset()
    for item in seq:
        f = _first(item)
        if f is None:
            continue
        out |= f
        op, av = item
        if not (op in _REPEATS and av[0] == 0) and _min_len([item]) > 0:
            return out
    return out or _ALL


def _charset(items) -> frozenset:
    out: set[int] = set()
    negate = False
    for op, av in items:
        if op == C.NEGATE:
            negate = True
        elif op == C.LITERAL:
            out.add(av)
        elif op == C.RANGE:
            out.update(range(av[0], min(av[1], 255) + 1))
        elif op == C.CATEGORY:
            out |= _CATEGORIES.get(av, _ALL)
        else:
            out |= _ALL
    s = frozenset(i for i in out if i < 256)
    return _ALL - s if negate else s


def _min_len(seq: list) -> int:
    n = 0
    for op, av in seq:
        if op in (C.LITERAL, C.NOT_LITERAL, C.IN, C.ANY):
            n += 1
        elif op in _REPEATS or op == _POSSESSIVE:
            n += av[0] * _min_len(list(av[2]))
        elif op == C.SUBPATTERN:
            n += _min_len(list(av[-1]))
        elif op == C.BRANCH:
            n += min(_min_len(list(alt)) for alt in av[1])
    return n
