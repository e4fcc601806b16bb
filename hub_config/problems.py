"""What is wrong with a values file: :class:`Problem` (one key path, one message) and
:class:`ValuesError` (all of them).

This module imports nothing, so every section owner (``afhub.<component>.hub_values``) can
import it at top level without pulling in the values machinery (no import cycles).
"""


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
