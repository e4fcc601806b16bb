"""afhub's option definitions (``server_ext/dask_options.py`` ``Field``) as dask-gateway option
fields: :func:`gateway_options` gives a user's ``Options``, each field validated by its
``Field.check`` (messages name the option and the range allowed for this user).

Imports dask-gateway-server only: both gateways run this file, the hub's (``options.py``) and
the dask-gateway chart's, whose image has no afhub (``hub_config/dask_chart.py`` ships its
source with ``dask_options.py``'s in ``gateway.extraConfig``). What must not live here: the
definitions themselves, limits, images, backends.
"""

from __future__ import annotations

from dask_gateway_server.options import Float, Integer, Options, Select, String


def _checked(cls):
    """``cls`` whose validation is the definition's ``check`` (a ValueError names the option)."""

    class Checked(cls):
        def __init__(self, spec, **kw):
            self.spec = spec  # before the base validates default, min and max
            super().__init__(spec.name, default=spec.default, label=spec.label, **kw)

        def validate(self, x):
            try:
                return self.spec.check(x)
            except ValueError as e:  # dask_options.DaskOptionError
                raise ValueError(str(e)) from None

    Checked.__name__ = f"Checked{cls.__name__}"
    return Checked


FIELD_CLASSES = {
    "float": _checked(Float),
    "int": _checked(Integer),
    "select": _checked(Select),
    "path": _checked(String),
}


def gateway_options(fields, handler) -> Options:
    """dask-gateway ``Options`` offering ``fields`` (``dask_options.Field``), then ``handler``."""
    out = []
    for f in fields:
        cls = FIELD_CLASSES[f.type]
        if f.type == "select":
            out.append(cls(f, options=[v for v, _ in f.choices]))
        elif f.type == "path":
            out.append(cls(f))
        else:
            out.append(cls(f, min=f.min, max=f.max))
    return Options(*out, handler=handler)
