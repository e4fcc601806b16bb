"""Every code block of the users' pages runs on the embedded default, or says why not.

The pages (``doc_blocks.USER_PAGES``) follow the convention in ``tests/doc_blocks.py``: a
``python`` block runs in a kernel of alice's server, an ``sh`` block in a JupyterLab terminal
of that server (``Terminal`` below), in page order, one kernel and one terminal per page, on
one real facility (``afhub up`` of ``hub_config/examples/local.yaml``: hub, proxy, demo
provider, dask-gateway, XRootD origin and cache). A block the page shows as output
(``<!-- output -->``) is compared with what the block before it printed. Any other block must carry
``<!-- not-run: REASON -->``; the first test fails, naming the page and line, on a block that
is neither, so none slips through.

Nothing is faked: the blocks meet the real gateway, storage and token of the embedded default.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest
from doc_blocks import (
    USER_PAGES,
    Block,
    DocBlockError,
    Step,
    anchor,
    anchors,
    blocks,
    relative_links,
    same_output,
    steps,
)
from facility import REPO
from kernel_ws import Kernel, KernelError

# -- the convention, as a table (pure) ---------------------------------------------------------

PY = "```python\nx = 1\n```\n"

BLOCKS = [
    # (page text, blocks found)
    ("no code here\n", []),
    (PY, [Block(1, "python", "x = 1\n")]),
    ("```\nplain\n```\n", [Block(1, "", "plain\n")]),
    (
        "<!-- not-run: needs Slurm -->\n```sh\nsbatch x\n```\n",
        [Block(2, "sh", "sbatch x\n", not_run="needs Slurm")],
    ),
    # blank lines may stand between a marker and its block
    (
        "<!-- not-run: operator -->\n\n```yaml\na: 1\n```\n",
        [Block(3, "yaml", "a: 1\n", "operator")],
    ),
    (
        PY + "<!-- output -->\n```text\n6\n```\n",
        [Block(1, "python", "x = 1\n"), Block(5, "text", "6\n", output=True)],
    ),
    # indented in a list item: the indent is not part of the code
    (
        "- item:\n\n  ```python\n  if x:\n      y()\n  ```\n",
        [Block(3, "python", "if x:\n    y()\n")],
    ),
    # a longer fence holds a shorter one; the info string's first word, lower-cased
    ("````Python title\n```\n````\n", [Block(1, "python", "```\n")]),
    ("~~~bash\nls\n~~~\n", [Block(1, "bash", "ls\n")]),
    # an ordinary comment is not a marker
    ("<!-- a note -->\n" + PY, [Block(2, "python", "x = 1\n")]),
]


@pytest.mark.parametrize(("text", "expected"), BLOCKS)
def test_blocks(text, expected):
    assert blocks(text) == expected


BAD = [
    ("<!-- not-run -->\n" + PY, "line 1: <!-- not-run --> needs a reason"),
    ("<!-- not-run:   -->\n" + PY, "line 1: <!-- not-run --> needs a reason"),
    ("<!-- output 3 -->\n" + PY, "line 1: <!-- output --> takes nothing"),
    ("<!-- not-run: x -->\ntext between\n" + PY, "line 1: a marker with no block after it"),
    ("text\n<!-- not-run: x -->\n", "line 2: a marker with no block after it"),
    ("<!-- output -->\n<!-- not-run: x -->\n" + PY, "line 1: a marker with no block after it"),
    ("intro\n```python\nx = 1\n", "line 2: the block opened here is never closed"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_blocks_refused(text, message):
    with pytest.raises(DocBlockError) as e:
        blocks(text)
    assert str(e.value).startswith(message)


STEPS = [
    # (blocks, steps, problems)
    ([], [], []),
    ([Block(1, "python", "a\n")], [Step("python", "a\n", 1)], []),
    (
        [Block(1, "bash", "ls\n"), Block(4, "sh", "pwd\n")],
        [Step("sh", "ls\n", 1), Step("sh", "pwd\n", 4)],
        [],
    ),
    (
        [Block(1, "python", "a\n"), Block(4, "text", "6\n", output=True)],
        [Step("python", "a\n", 1, "6\n")],
        [],
    ),
    ([Block(1, "yaml", "a: 1\n", not_run="operator")], [], []),
    (
        [Block(1, "yaml", "a: 1\n"), Block(5, "", "IdP -> hub\n")],
        [],
        [
            "line 1: a yaml block is neither run (python, sh) nor marked <!-- not-run: REASON -->",
            "line 5: a plain block is neither run (python, sh) nor marked <!-- not-run: REASON -->",
        ],
    ),
    # an output block belongs to the run block right before it, and to one only
    (
        [Block(1, "text", "6\n", output=True)],
        [],
        ["line 1: <!-- output --> follows no block that runs"],
    ),
    (
        [Block(1, "sh", "x\n", not_run="operator"), Block(4, "text", "6\n", output=True)],
        [],
        ["line 4: <!-- output --> follows no block that runs"],
    ),
    (
        [
            Block(1, "python", "a\n"),
            Block(4, "text", "1\n", output=True),
            Block(7, "text", "2\n", output=True),
        ],
        [Step("python", "a\n", 1, "1\n")],
        ["line 7: <!-- output --> follows no block that runs"],
    ),
]


@pytest.mark.parametrize(("found", "expected", "problems"), STEPS)
def test_steps(found, expected, problems):
    assert steps(found) == (expected, problems)


@pytest.mark.parametrize(
    ("expected", "printed", "same"),
    [
        ("6\n", "6\n", True),
        ("6\n", "6   \n\n", True),
        ("6\n", "7\n", False),
        ("a\nb\n", "a\n", False),
        ("a\n\nb\n", "a\nb\n", False),  # blank lines inside count
    ],
)
def test_same_output(expected, printed, same):
    assert same_output(expected, printed) is same


def _page_steps(page: str) -> list[Step]:
    try:
        found, problems = steps(blocks((REPO / page).read_text(encoding="utf-8")))
    except DocBlockError as e:
        pytest.fail(f"{page}: {e}")
    assert problems == [], f"{page}: " + "; ".join(problems)
    return found


@pytest.mark.parametrize("page", USER_PAGES)
def test_every_block_of_the_users_pages_runs_or_says_why_not(page):
    _page_steps(page)


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Dask on Slurm", "dask-on-slurm"),
        (
            "Group changes at the provider (no new login needed)",
            "group-changes-at-the-provider-no-new-login-needed",
        ),
        ("Reading data: the storage side", "reading-data-the-storage-side"),
        ("Read throughput (`bench/data_read.py`)", "read-throughput-benchdata_readpy"),
        ("On one machine: `afhub up`", "on-one-machine-afhub-up"),
    ],
)
def test_anchor(title, slug):
    assert anchor(title) == slug


def test_anchors_and_links():
    page = "# Title\n\n```sh\n# not a heading\n```\n## Two words ##\n[a](b.md#x) [c](#two-words) [d](https://e/f)\n"
    assert anchors(page) == {"title", "two-words"}
    assert relative_links(page) == [("b.md", "x"), ("", "two-words")]
    # a shorter fence inside a longer one does not close it
    assert anchors("````md\n```\n# inside\n```\n````\n# after\n") == {"after"}


def test_links_between_the_docs_resolve():
    """Every relative link of README.md and docs/ names a file that exists and, for a page, a
    heading it has (so a section moved between users' and operators' pages leaves no link)."""
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for file, fragment in relative_links(page.read_text(encoding="utf-8")):
            target = (page.parent / file).resolve() if file else page
            if not target.exists():
                broken.append(f"{page.relative_to(REPO)}: {file} does not exist")
            elif fragment and target.suffix == ".md":
                if fragment not in anchors(target.read_text(encoding="utf-8")):
                    broken.append(f"{page.relative_to(REPO)}: {file}#{fragment}: no such heading")
    assert broken == []


# -- the pages' blocks on the embedded default -------------------------------------------------


def _runnable(page: str) -> bool:
    """The page has a block to run (a page breaking the convention fails the test above)."""
    try:
        return bool(steps(blocks((REPO / page).read_text(encoding="utf-8")))[0])
    except DocBlockError:
        return False


RUNNABLE = [p for p in USER_PAGES if _runnable(p)]


class Terminal:
    """A JupyterLab terminal of the user's server (terminado, over its websocket through the
    hub's proxy, with the session's cookies, as Lab drives it). An sh block runs as a script
    in a fresh ``bash -e -o pipefail`` typed at the terminal's shell, so it gets what a user's
    terminal has (the login shell's PATH and the server's variables). The script goes in, and
    its output comes back, as files through the contents API, so the terminal's echo of what
    is typed never mixes with the block's output."""

    def __init__(self, hs):
        self.hs = hs
        r = hs.server_api("POST", "api/terminals")
        assert r.status_code == 200, r.text
        self.name = r.json()["name"]

    def _put(self, path: str, text: str) -> None:
        r = self.hs.server_api(
            "PUT", f"api/contents/{path}", json={"type": "file", "format": "text", "content": text}
        )
        assert r.status_code in (200, 201), r.text

    def _take(self, path: str) -> str:
        r = self.hs.server_api("GET", f"api/contents/{path}", params={"content": 1})
        assert r.status_code == 200, r.text
        self.hs.server_api("DELETE", f"api/contents/{path}")
        return r.json()["content"]

    async def _type(self, line: str, done: re.Pattern, timeout: float) -> re.Match:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        model = self.hs.server_model()
        url = self.hs.url(model["url"]).replace("http://", "ws://")
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.hs.session.cookies)
        conn = await websocket_connect(
            HTTPRequest(f"{url}terminals/websocket/{self.name}", headers={"Cookie": cookies})
        )
        seen = ""
        deadline = time.monotonic() + timeout
        try:
            await conn.write_message(json.dumps(["stdin", line + "\r"]))
            while time.monotonic() < deadline:
                raw = await asyncio.wait_for(conn.read_message(), deadline - time.monotonic())
                if raw is None:
                    break
                kind, *rest = json.loads(raw)
                if kind == "stdout":
                    seen += rest[0]
                    m = done.search(seen)
                    if m:
                        return m
        finally:
            conn.close()
        raise TimeoutError(f"the terminal did not finish: {seen[-2000:]}")

    def run(self, code: str, timeout: float = 300) -> str:
        tag = uuid.uuid4().hex[:12]
        script, out, err = (f"afhub-doc-{tag}.{ext}" for ext in ("sh", "out", "err"))
        self._put(script, code)
        # `$?` is expanded only in what the shell prints, never in the echo of the typed line
        line = (
            f"bash -e -o pipefail ~/{script} >~/{out} 2>~/{err}; echo {tag}=$?=; rm -f ~/{script}"
        )
        m = asyncio.run(self._type(line, re.compile(tag + r"=(\d+)="), timeout))
        printed, errors = self._take(out), self._take(err)
        if m.group(1) != "0":
            raise KernelError("exit status", m.group(1), [errors])
        return printed

    def close(self) -> None:
        self.hs.server_api("DELETE", f"api/terminals/{self.name}")


@pytest.fixture(scope="module")
def alice(facility):
    s = facility.login_with_server("alice")
    yield s
    s.stop_server()


@pytest.mark.integration
@pytest.mark.parametrize("page", RUNNABLE)
def test_the_pages_blocks_run_on_the_embedded_default(alice, page):
    page_steps = _page_steps(page)
    # one kernel per page: blocks build on the ones before them; a terminal if the page has
    # shell blocks
    kernel = Kernel(alice) if any(s.kind == "python" for s in page_steps) else None
    terminal = Terminal(alice) if any(s.kind == "sh" for s in page_steps) else None
    try:
        for step in page_steps:
            try:
                if step.kind == "python":
                    printed = kernel.run(step.code, timeout=300)
                else:
                    printed = terminal.run(step.code)
            except KernelError as e:
                pytest.fail(f"{page}:{step.line}: the {step.kind} block failed: {e}")
            if step.expected is not None:
                assert same_output(step.expected, printed), (
                    f"{page}:{step.line}: the page shows\n{step.expected}but the block printed\n"
                    f"{printed}"
                )
    finally:
        if kernel is not None:
            # a kernel's end closes what it made with the stock client (shutdown_on_close)
            alice.server_api("DELETE", f"api/kernels/{kernel.id}")
        if terminal is not None:
            terminal.close()
