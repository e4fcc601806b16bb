"""afhub.hub_config: the values file, its schema, and applying it to JupyterHub.

``configure(c, path_or_dict)`` is the one call every deployment uses (``afhub up``,
Zero to JupyterHub ``hub.extraConfig``, a batch site's ``jupyterhub_config.py``).
"""

from .apply import build, configure, render_plan
from .values import Problem, ValuesError, load, validate

__all__ = ["Problem", "ValuesError", "build", "configure", "load", "render_plan", "validate"]
