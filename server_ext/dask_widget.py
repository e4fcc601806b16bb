"""``ClusterList``: an ipywidgets view of your Dask clusters, for notebooks and Voilà pages.

    from afhub.server_ext.dask import ClusterList
    ClusterList()

Lists every pending or running cluster of yours, wherever it was created (this notebook, another
one, the sidebar), with its workers, scale and adapt controls, the dashboard link and shut down;
"New cluster" starts one with the facility defaults. Everything goes through
:class:`~.dask_service.DaskService`, i.e. through the gateway as you: the same rules as the
notebook API and the sidebar. Errors (an option out of range, the gateway away) appear in the
view's message line, naming the option; no traceback.
"""

from __future__ import annotations

import html

import ipywidgets as w

from . import dask_client as api
from .dask_service import DaskService


def _error_text(e: Exception) -> str:
    if isinstance(e, (api.DaskOptionError, api.DaskNotEnabled, LookupError)):
        return str(e)
    if isinstance(e, ValueError):
        return f"Dask Gateway refused: {e}"
    return f"Dask Gateway: {type(e).__name__}: {e}"


class ClusterRow(w.HBox):
    """One cluster: name, status, workers, scale, adapt, dashboard, shut down."""

    def __init__(self, view: ClusterList, model: dict):
        self.view = view
        self.name = model["name"]
        self.label = w.HTML()
        self.workers = w.BoundedIntText(
            min=0, max=10**6, description="Workers", layout={"width": "150px"}
        )
        self.scale_button = w.Button(description="Scale", layout={"width": "70px"})
        self.minimum = w.BoundedIntText(
            min=0, max=10**6, description="Adapt", layout={"width": "130px"}
        )
        self.maximum = w.BoundedIntText(
            min=0, max=10**6, description="to", layout={"width": "110px"}
        )
        self.adapt_button = w.Button(description="Adapt", layout={"width": "70px"})
        self.dashboard = w.HTML()
        self.stop_button = w.Button(description="Shut down", button_style="danger")
        self.scale_button.on_click(
            lambda _: self.view.act(
                self.view.service.scale, self.name, {"workers": self.workers.value}
            )
        )
        self.adapt_button.on_click(
            lambda _: self.view.act(
                self.view.service.adapt,
                self.name,
                {"minimum": self.minimum.value, "maximum": self.maximum.value},
            )
        )
        self.stop_button.on_click(lambda _: self.view.act(self.view.service.stop, self.name))
        self.update(model)
        super().__init__(
            [
                self.label,
                self.workers,
                self.scale_button,
                self.minimum,
                self.maximum,
                self.adapt_button,
                self.dashboard,
                self.stop_button,
            ]
        )

    def update(self, model: dict) -> None:
        self.model = model
        opts = model.get("options") or {}
        detail = ", ".join(f"{k}={v}" for k, v in sorted(opts.items()))
        self.label.value = (
            f"<b>{html.escape(model['name'][:8])}</b> {html.escape(model['status'])} · "
            f"{model['workers']} worker(s) <small>{html.escape(detail)}</small>"
        )
        self.workers.value = model.get("requested") or model["workers"]
        adapt = model.get("adapt") or {}
        self.minimum.value = adapt.get("minimum", 0)
        self.maximum.value = adapt.get("maximum", max(1, model["workers"]))
        link = model.get("dashboard_link")
        self.dashboard.value = (
            f'<a href="{html.escape(link)}" target="_blank">Dashboard</a>' if link else ""
        )


class ClusterList(w.VBox):
    """Your Dask clusters; ``refresh()`` re-reads them (the Refresh button does the same)."""

    def __init__(self, service: DaskService | None = None):
        self.service = service or DaskService()
        self.message = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.new_button = w.Button(description="New cluster", button_style="primary")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.new_button.on_click(lambda _: self.act(self.service.create, {"options": {}}))
        self.rows_box = w.VBox()
        self.rows: list[ClusterRow] = []
        super().__init__(
            [
                w.HBox([w.HTML("<b>Dask clusters</b>"), self.refresh_button, self.new_button]),
                self.rows_box,
                self.message,
            ]
        )
        self.refresh()

    def refresh(self) -> None:
        try:
            models = self.service.list_models()
        except Exception as e:
            self.message.value = html.escape(_error_text(e))
            return
        self.rows = [ClusterRow(self, m) for m in models]
        self.rows_box.children = self.rows or [
            w.HTML("<i>No clusters; start one with New cluster.</i>")
        ]

    def act(self, fn, *args) -> bool:
        """Run an action; show its error (naming the option) instead of raising."""
        try:
            fn(*args)
        except Exception as e:
            self.message.value = html.escape(_error_text(e))
            self.refresh_rows_only()
            return False
        self.message.value = ""
        self.refresh()
        return True

    def refresh_rows_only(self) -> None:
        try:
            for row, model in zip(self.rows, self.service.list_models(), strict=False):
                row.update(model)
        except Exception:
            pass

    def row(self, name: str) -> ClusterRow:
        return next(r for r in self.rows if r.name == name)
