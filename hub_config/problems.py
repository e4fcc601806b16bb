"""What is wrong with a values file: :class:`Problem` (one key path, one message) and
:class:`ValuesError` (all of them).

This module imports nothing, so every section owner (``hub_config/sections.py`` lists them) can
import it at top level without pulling in the values machinery (no import cycles). It also
holds :func:`did_you_mean`, the one rule for which known name a mistyped one is suggested.
"""


def format_path(parts) -> str:
    """``['profiles', 2, 'gpu']`` -> ``profiles[2].gpu``."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def describe_value(value) -> str:
    """How a problem names a value it got: ``string 'x'``, ``number 3``, ``a list``..."""
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


class Problem(tuple):
    """One problem: ``path`` is the key path as operators see it (``profiles[2].gpu.count``),
    ``message`` says what is wrong and, where possible, what to write instead.

    Immutable, hashable and ordered by ``(path, message)``, so problem lists sort by key path
    and de-duplicate in sets."""

    __slots__ = ()

    def __new__(cls, path: str, message: str):
        return tuple.__new__(cls, (path, message))

    @property
    def path(self) -> str:
        return self[0]

    @property
    def message(self) -> str:
        return self[1]

    def __repr__(self) -> str:
        return f"Problem(path={self[0]!r}, message={self[1]!r})"

    def __str__(self) -> str:
        return f"{self[0]}: {self[1]}" if self[0] else self[1]

    def __getnewargs__(self):
        return (self[0], self[1])


class ValuesError(ValueError):
    """A values file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list, source: str = "values", partial=None):
        self.problems = problems
        self.source = source
        # what could be read of a file the YAML loader refused (see loader.py), or None
        self.partial = partial
        super().__init__("\n".join(str(p) for p in problems))


def _edits(a: str, b: str) -> int:
    """Edits turning ``a`` into ``b``: insert, delete, substitute, or swap two neighbours."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def close_match(word: str, candidates) -> str | None:
    """The candidate ``word`` is a typo of, or None: at most one edit per four characters
    (at least one; case ignored), the fewest edits winning, then the first in sorted order.
    ``prot`` -> ``port`` and ``max_wrokers`` -> ``max_workers`` are typos; ``public_url`` is
    not ``db_url`` (five edits), so nothing is suggested for it."""
    limit = max(1, len(word) // 4)
    best = None
    for c in sorted(str(c) for c in candidates):
        d = _edits(word.casefold(), c.casefold())
        if d <= limit and (best is None or d < best[0]):
            best = (d, c)
    return best[1] if best else None


def did_you_mean(word: str, candidates) -> str:
    """`` (did you mean 'port'?)`` for a close match (:func:`close_match`), else ``""``."""
    match = close_match(word, candidates)
    return f" (did you mean {match!r}?)" if match else ""
