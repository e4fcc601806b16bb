"""Pure translations of a resolved profile into one backend's spawner settings.

One module per backend (``local.py``, ``kubernetes.py``; ``slurm.py``... as they come), each a
keyword-only function ``Resolved -> <Backend>Config`` with no I/O, tested with tables. The
spawner classes that apply them live one level up (``spawner/local.py``,
``spawner/kubernetes.py``) and follow the protocol in ``spawner/backend.py``.
"""
