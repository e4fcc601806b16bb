"""XRootD reads that survive token renewal: one connection per token generation.

An XRootD client authenticates a connection once, at login (``ztn`` sends the token it finds
in ``BEARER_TOKEN_FILE``), and the server authorises every later open on that connection with
that first token. Once it has expired (plus the scitokens plugin's 60 s cache) every open on
the connection fails, however fresh the file is, and a busy connection never idles out
(``XRD_DATASERVERTTL`` counts idle time only). XRootD shares connections by *channel id*:
the URL's ``user@host:port``. So this module gives each token generation its own login name
(``t`` + 7 hex digits of the token file's identity: it changes with every atomic renewal)
and puts it in ``root://`` URLs that have none: after a renewal, new opens go to a new
connection that logs in with the new token; files already open keep reading on the old one
(authorised at open), which then idles out. docs/operators-tokens.md "Reads across renewals".

:func:`session_url` is pure; :func:`login_name` stats the token file; :func:`install` wraps
the Python client's entry points (``XRootD.client.File.open``, ``FileSystem``,
``CopyProcess.add_job``), which uproot and fsspec-xrootd use. It is installed in kernels (an
IPython extension, :func:`load_ipython_extension`, enabled by the analysis environment's
``etc/ipython`` config) and on Dask workers (the token plugin, ``dask_token.py``), and only
where the hub's contract turns it on (``AFHUB_XROOTD_SESSIONS``). Only stdlib imports at
module level: it runs in kernels and on workers.
"""

from __future__ import annotations

import hashlib
import os
import threading

from . import contract

SCHEMES = ("root", "roots", "xroot", "xroots")
_lock = threading.Lock()
_installed = False


def session_url(url: str, name: str | None) -> str:
    """``url`` with login name ``name`` when it is an XRootD URL without a user part.

    >>> session_url("root://cache:1094//public/f.root", "t0a1b2c3")
    'root://t0a1b2c3@cache:1094//public/f.root'
    """
    if not name or not isinstance(url, str):
        return url
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        return url
    host = rest.split("/", 1)[0]
    if "@" in host or not host:
        return url  # the caller chose a login name (or the URL is not a remote one)
    return f"{scheme}://{name}@{rest}"


def login_name(environ=None) -> str | None:
    """The login name of the current token generation, or None (no token file: leave URLs)."""
    environ = os.environ if environ is None else environ
    path = environ.get(contract.TOKEN_FILE)
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    ident = f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}".encode()
    return "t" + hashlib.sha256(ident).hexdigest()[:7]


def enabled(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(contract.XROOTD_SESSIONS, "") == contract.XROOTD_SESSIONS_PER_TOKEN


class _GenerationalFileSystem:
    """Stands in for the compiled ``FileSystem`` inside ``XRootD.client.FileSystem``: each
    call goes to a compiled FileSystem for the current token generation's URL."""

    def __init__(self, factory, url: str):
        self._factory, self._url = factory, url
        self._name: object = object()
        self._current = None

    def _fs(self):
        name = login_name()
        if name != self._name or self._current is None:
            self._current = self._factory(session_url(self._url, name))
            self._name = name
        return self._current

    def __getattr__(self, attr):
        return getattr(self._fs(), attr)


def install(environ=None) -> bool:
    """Wrap the XRootD Python client's entry points (once per process). False where the
    contract does not ask for it or the client is not installed."""
    global _installed
    if not enabled(environ):
        return False
    with _lock:
        if _installed:
            return True
        try:
            from pyxrootd import client as compiled
            from XRootD.client import copyprocess, file, filesystem
        except ImportError:
            return False

        open_ = file.File.open
        open_template = file.File.openusingtemplate
        add_job = copyprocess.CopyProcess.add_job

        def open(self, url, *args, **kwargs):  # noqa: A001 (the client's method name)
            return open_(self, session_url(url, login_name()), *args, **kwargs)

        def openusingtemplate(self, src_file, url, *args, **kwargs):
            return open_template(self, src_file, session_url(url, login_name()), *args, **kwargs)

        def fs_init(self, url):
            self._FileSystem__fs = _GenerationalFileSystem(compiled.FileSystem, url)

        def add_job_(self, source, target, *args, **kwargs):
            name = login_name()
            return add_job(
                self, session_url(source, name), session_url(target, name), *args, **kwargs
            )

        for cls, attr, fn, orig in (
            (file.File, "open", open, open_),
            (file.File, "openusingtemplate", openusingtemplate, open_template),
            (filesystem.FileSystem, "__init__", fs_init, filesystem.FileSystem.__init__),
            (copyprocess.CopyProcess, "add_job", add_job_, add_job),
        ):
            fn.__doc__, fn.__wrapped__ = orig.__doc__, orig
            setattr(cls, attr, fn)
        _installed = True
        return True


def load_ipython_extension(ipython) -> None:
    """IPython extension (``InteractiveShellApp.extra_extensions``): install in this kernel."""
    install()
