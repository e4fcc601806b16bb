/**
 * A Dask cluster's individual dashboard plots as JupyterLab main-area panes, opened from the
 * sidebar's Dask section (as dask-labextension does for its own clusters; written for afhub's
 * relay). Each pane is an iframe on the plot's page beside the cluster's dashboard link: through
 * the owner's own server, `{baseUrl}afhub/dask/clusters/<name>/individual-<plot>`
 * (`server_ext/dask_dashboard.py`, which lets JupyterLab frame exactly these pages): the same
 * origin as JupyterLab, the user's login only, nothing new for anyone else.
 *
 * A pane checks its cluster (`GET afhub/api/dask/clusters/<name>`) before loading the plot
 * and every few seconds while it is shown; once the cluster has stopped it drops the iframe
 * and says so. Pure parts (`DASHBOARD_PLOTS`, `plotUrl`, `observe`, `nextView`) come first and
 * are tested in `src/__tests__/dashboards.spec.ts`.
 */
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import type { IDaskCluster } from './dask';
import { shortName } from './model';
import { APIError } from './request';
import { h } from './views';

/** One of the scheduler's individual plots (distributed's `/individual-*` Bokeh apps). */
export interface IDashboardPlot {
  id: string;
  title: string;
  /** the page under the dashboard's root (distributed/dashboard/scheduler.py `applications`) */
  path: string;
}

export const DASHBOARD_PLOTS: readonly IDashboardPlot[] = [
  { id: 'task-stream', title: 'Task stream', path: 'individual-task-stream' },
  { id: 'progress', title: 'Progress', path: 'individual-progress' },
  {
    id: 'workers-memory',
    title: 'Worker memory',
    path: 'individual-workers-memory'
  }
];

export function findPlot(id: string): IDashboardPlot | null {
  return DASHBOARD_PLOTS.find(p => p.id === id) ?? null;
}

/**
 * The plot's page beside the cluster's dashboard link (`.../clusters/<name>/status`, what the
 * server lists): through the owner's own server where the hub relays dashboards
 * (`{baseUrl}afhub/dask/clusters/<name>/individual-<plot>`), else where the gateway serves them.
 */
export function plotUrl(dashboardLink: string, plot: IDashboardPlot): string {
  const root = dashboardLink
    .replace(/[?#].*$/, '')
    .replace(/\/status\/?$/, '')
    .replace(/\/+$/, '');
  return `${root}/${plot.path}`;
}

/** The pane's widget id: one pane per cluster and plot. */
export function paneId(cluster: string, plotId: string): string {
  return `afhub-dask-plot:${cluster}:${plotId}`;
}

export function paneTitle(cluster: string, plot: IDashboardPlot): string {
  return `${plot.title} · ${shortName(cluster)}`;
}

/**
 * What a pane shows:
 * - `live`: the plot (iframe);
 * - `waiting`: a note, the plot comes once the cluster runs (checked again);
 * - `gone`: the cluster stopped (or is not this user's): a message, no iframe, no more checks;
 * - `error`: the cluster could not be checked (network, gateway): a note, checked again.
 */
export type PaneView =
  | { kind: 'live'; url: string }
  | { kind: 'waiting' | 'gone' | 'error'; text: string };

/** The view one check gives: the cluster's model, or the error the check failed with. */
export function observe(
  cluster: string,
  plot: IDashboardPlot,
  answer: { model: IDaskCluster } | { status: number; message: string }
): PaneView {
  const name = shortName(cluster);
  const gone = `Cluster ${name} has stopped: its ${plot.title.toLowerCase()} is gone. Close this pane, or open the plot again from a running cluster in the Dask section.`;
  if ('status' in answer) {
    if (answer.status === 404) {
      return { kind: 'gone', text: gone };
    }
    return {
      kind: 'error',
      text: `Cannot check cluster ${name}: ${answer.message}`
    };
  }
  const m = answer.model;
  switch (m.status) {
    case 'running':
      return m.dashboard_link
        ? { kind: 'live', url: plotUrl(m.dashboard_link, plot) }
        : {
            kind: 'gone',
            text: `Cluster ${name} serves no dashboard (is bokeh installed in its environment?).`
          };
    case 'pending':
      return {
        kind: 'waiting',
        text: `Cluster ${name} is starting; the ${plot.title.toLowerCase()} shows once it runs.`
      };
    default: // stopping, stopped, failed
      return { kind: 'gone', text: gone };
  }
}

/**
 * The view after a check: `gone` is final; a live plot stays up through a failed check (a
 * gateway hiccup does not blank a working plot); otherwise the observation.
 */
export function nextView(current: PaneView | null, seen: PaneView): PaneView {
  if (current?.kind === 'gone') {
    return current;
  }
  if (current?.kind === 'live' && seen.kind === 'error') {
    return current;
  }
  return seen;
}

export interface IDashboardPaneOptions {
  cluster: string;
  plot: IDashboardPlot;
  /** the cluster's model from the server (`GET afhub/api/dask/clusters/<name>`) */
  fetchCluster: (name: string) => Promise<IDaskCluster>;
  /** seconds between checks while the pane is shown; 0: only when asked (`check()`) */
  interval?: number;
}

/** One plot of one cluster in the main area. */
export class DashboardPane extends Widget {
  constructor(private _opts: IDashboardPaneOptions) {
    super();
    this.id = paneId(_opts.cluster, _opts.plot.id);
    this.addClass('afhub-dashboard-pane');
    this.title.label = paneTitle(_opts.cluster, _opts.plot);
    this.title.caption = `${_opts.plot.title} of Dask cluster ${_opts.cluster}`;
    this.title.closable = true;
    this.node.dataset.cluster = _opts.cluster;
    this.node.dataset.plot = _opts.plot.id;
    this._message = h('p', {
      class: 'afhub-dashboard-message',
      role: 'status'
    });
    this.node.append(this._message);
    const seconds = _opts.interval ?? 5;
    if (seconds > 0) {
      this._poll = new Poll({
        name: `afhub-sidebar:${this.id}`,
        factory: () => this.check(),
        frequency: { interval: seconds * 1000, backoff: true, max: 60_000 },
        standby: () =>
          this.view?.kind === 'gone' ||
          this.isHidden ||
          !this.isAttached ||
          document.visibilityState === 'hidden'
      });
    }
  }

  get cluster(): string {
    return this._opts.cluster;
  }

  get plot(): IDashboardPlot {
    return this._opts.plot;
  }

  view: PaneView | null = null;

  /** the plot's iframe, while the pane shows it */
  get iframe(): HTMLIFrameElement | null {
    return this._iframe;
  }

  /** Ask the server about the cluster once and show what that means. */
  async check(): Promise<void> {
    if (this.isDisposed || this.view?.kind === 'gone') {
      return;
    }
    let seen: PaneView;
    try {
      const model = await this._opts.fetchCluster(this._opts.cluster);
      seen = observe(this._opts.cluster, this._opts.plot, { model });
    } catch (e) {
      const status = e instanceof APIError ? e.status : 0;
      const message = e instanceof Error ? e.message : String(e);
      seen = observe(this._opts.cluster, this._opts.plot, { status, message });
    }
    if (!this.isDisposed) {
      this._render(nextView(this.view, seen));
    }
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll?.dispose();
    this._dropIframe();
    super.dispose();
  }

  protected onAfterAttach(): void {
    if (this.view === null) {
      void this.check();
    }
  }

  protected onAfterShow(): void {
    if (this.view !== null && this.view.kind !== 'gone') {
      void this._poll?.refresh();
    }
  }

  /** Render `view`; an iframe already showing the plot is kept as it is. */
  private _render(view: PaneView): void {
    this.view = view;
    this.node.dataset.view = view.kind;
    if (view.kind === 'live') {
      this._message.textContent = '';
      this._message.hidden = true;
      if (!this._iframe) {
        const frame = h('iframe', {
          class: 'afhub-dashboard-frame',
          title: this.title.caption,
          // the page is the user's own server (same origin): Bokeh's scripts and its WebSocket
          // need both; forms, popups and top navigation stay off
          sandbox: 'allow-scripts allow-same-origin',
          referrerpolicy: 'no-referrer'
        }) as HTMLIFrameElement;
        frame.src = view.url;
        this._iframe = frame;
        this.node.append(frame);
      }
      return;
    }
    if (view.kind === 'gone') {
      this._dropIframe();
      this._poll?.dispose();
    }
    this._message.textContent = view.text;
    this._message.className = `afhub-dashboard-message afhub-level-${
      view.kind === 'waiting' ? 'warn' : 'error'
    }`;
    this._message.hidden = false;
  }

  private _dropIframe(): void {
    const frame = this._iframe;
    this._iframe = null;
    if (frame) {
      frame.src = 'about:blank'; // Bokeh's WebSocket closes now, not when garbage is collected
      frame.remove();
    }
  }

  private _message: HTMLElement;
  private _iframe: HTMLIFrameElement | null = null;
  private _poll: Poll | null = null;
}
