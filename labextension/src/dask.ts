/**
 * The Dask section: the user's gateway clusters (including ones created in code, since the
 * server lists them from the gateway), create with the facility's options, scale, adapt,
 * dashboard link, the individual plots as main-area panes (`dashboards.ts`), shut down. REST:
 * `afhub/api/dask/...` of the afhub server extension.
 *
 * The form's `environment` select (the user's own environments, from the server's kernel
 * discovery) disables the `image` select while one is chosen.
 *
 * Pure helpers (`optionValues`, `imageApplies`, `clusterSummary`, `checkWorkers`) come first
 * and are tested in `src/__tests__/dask.spec.ts`; `DaskSection` below does the DOM and calls.
 */
import { ServerConnection } from '@jupyterlab/services';

import { DASHBOARD_PLOTS } from './dashboards';
import { APIError, requestAPI } from './request';
import { formatDuration, shortName } from './model';
import { h } from './views';

export interface IDaskCluster {
  name: string;
  status: 'pending' | 'running' | 'stopping' | 'stopped' | 'failed';
  workers: number;
  requested: number;
  adapt: { minimum: number; maximum: number } | null;
  dashboard_link: string | null;
  options: Record<string, unknown>;
  start_time: number | null;
}

export interface IDaskField {
  name: string;
  label: string;
  type: 'int' | 'float' | 'select';
  default: number | string;
  min?: number | null;
  max?: number | null;
  choices?: { value: string; label: string }[];
  unit?: string;
}

export interface IDaskOptions {
  fields: IDaskField[];
  limits: { max_workers: number | null; max_clusters: number | null };
}

export interface IDaskClusterList {
  enabled: boolean;
  clusters: IDaskCluster[];
}

/**
 * Typed option values from the form's raw strings, or the first problem naming the field:
 * `{values}` or `{error: 'Worker cores: must be <= 4, got 8'}`.
 */
export function optionValues(
  fields: IDaskField[],
  raw: Record<string, string>
): { values: Record<string, number | string> } | { error: string } {
  const values: Record<string, number | string> = {};
  for (const f of fields) {
    const text = (raw[f.name] ?? String(f.default ?? '')).trim();
    if (f.type === 'select') {
      const allowed = (f.choices ?? []).map(c => c.value);
      if (!allowed.includes(text)) {
        return { error: `${f.label}: choose one of ${allowed.join(', ')}` };
      }
      values[f.name] = text;
      continue;
    }
    const x = Number(text);
    if (text === '' || !Number.isFinite(x)) {
      return { error: `${f.label}: a number is needed, got '${text}'` };
    }
    if (f.type === 'int' && !Number.isInteger(x)) {
      return { error: `${f.label}: a whole number is needed, got ${text}` };
    }
    if (f.min !== undefined && f.min !== null && x < f.min) {
      return { error: `${f.label}: must be >= ${f.min}, got ${x}` };
    }
    if (f.max !== undefined && f.max !== null && x > f.max) {
      return { error: `${f.label}: must be <= ${f.max}, got ${x}` };
    }
    values[f.name] = x;
  }
  return { values };
}

/** The option naming one of the user's own environments (`""`: the facility's image). */
export const ENVIRONMENT = 'environment';

/**
 * Whether the `image` option applies to the form's raw values: not when one of the user's
 * own environments is chosen (the scheduler and workers then run that environment).
 */
export function imageApplies(raw: Record<string, string>): boolean {
  return (raw[ENVIRONMENT] ?? '') === '';
}

/** A worker count from a text box, within `0..max`: a number or a message. */
export function checkWorkers(
  text: string,
  max: number | null
): number | string {
  const n = Number(text.trim());
  if (text.trim() === '' || !Number.isInteger(n) || n < 0) {
    return `Workers: a whole number >= 0 is needed, got '${text}'`;
  }
  if (max !== null && n > max) {
    return `Workers: at most ${max} on this facility, got ${n}`;
  }
  return n;
}

/** `running · 2/3 workers · adaptive 1–5 · up 4m 10s` */
export function clusterSummary(c: IDaskCluster, now: number): string {
  const parts: string[] = [c.status];
  parts.push(
    c.requested !== c.workers
      ? `${c.workers}/${c.requested} workers`
      : `${c.workers} worker${c.workers === 1 ? '' : 's'}`
  );
  if (c.adapt) {
    parts.push(`adaptive ${c.adapt.minimum}–${c.adapt.maximum}`);
  }
  if (c.start_time) {
    parts.push(`up ${formatDuration(now - c.start_time)}`);
  }
  return parts.join(' · ');
}

export { shortName };

/** `GET afhub/api/dask/clusters/<name>`: one of this user's clusters (404: none by that name). */
export function fetchCluster(
  name: string,
  settings: ServerConnection.ISettings
): Promise<IDaskCluster> {
  return requestAPI<IDaskCluster>(
    `dask/clusters/${encodeURIComponent(name)}`,
    settings
  );
}

export class DaskSection {
  readonly node = h('div', { class: 'afhub-section-body afhub-dask' });

  /**
   * `openPlot(cluster, plotId)` opens one of `DASHBOARD_PLOTS` as a main-area pane (`index.ts`);
   * without it the section offers no plot buttons.
   */
  constructor(
    private _settings: ServerConnection.ISettings,
    private _clock: () => number = () => Date.now() / 1000,
    private _openPlot: ((cluster: string, plotId: string) => void) | null = null
  ) {
    this._render();
  }

  list: IDaskClusterList | null = null;
  options: IDaskOptions | null = null;
  /** Why the clusters or options could not be read (cleared by the next good read). */
  error: string | null = null;
  /**
   * Why the user's last action failed (a form value, or the server's or gateway's refusal);
   * kept until the next action, so the section's polls do not wipe it.
   */
  actionError: string | null = null;
  busy = new Set<string>();
  private _key = '';

  async refresh(): Promise<void> {
    try {
      if (this.options === null) {
        const list = await this._call<IDaskClusterList>('clusters');
        if (list.enabled) {
          this.options = await this._call<IDaskOptions>('options');
        }
        this.list = list;
      } else {
        this.list = await this._call<IDaskClusterList>('clusters');
      }
      this.error = null;
    } catch (e) {
      if (e instanceof APIError && e.status === 404 && this.list === null) {
        // a server without afhub's Dask routes (an older afhub in the image): say so, once
        this.list = { enabled: false, clusters: [] };
        this.error = null;
        this._render();
        return;
      }
      this.error = e instanceof APIError ? e.message : String(e);
      this._render();
      throw e;
    }
    this._render();
  }

  private _call<T>(path: string, init: RequestInit = {}): Promise<T> {
    return requestAPI<T>(`dask/${path}`, this._settings, init);
  }

  private async _act(
    key: string,
    path: string,
    init: RequestInit
  ): Promise<void> {
    this.busy.add(key);
    this.actionError = null;
    this._render();
    try {
      await this._call(path, init);
    } catch (e) {
      this.actionError = e instanceof APIError ? e.message : String(e);
    } finally {
      this.busy.delete(key);
    }
    await this.refresh().catch(() => undefined);
  }

  private _json(method: string, body: unknown): RequestInit {
    return {
      method,
      body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' }
    };
  }

  create(raw: Record<string, string>, workersText: string): void {
    const opts = this.options;
    if (!opts) {
      return;
    }
    const parsed = optionValues(opts.fields, raw);
    if ('error' in parsed) {
      this.actionError = parsed.error;
      this._render();
      return;
    }
    const workers = checkWorkers(workersText, opts.limits.max_workers);
    if (typeof workers === 'string') {
      this.actionError = workers;
      this._render();
      return;
    }
    void this._act(
      'create',
      'clusters',
      this._json('POST', { options: parsed.values, workers })
    );
  }

  scale(name: string, text: string): void {
    const workers = checkWorkers(
      text,
      this.options?.limits.max_workers ?? null
    );
    if (typeof workers === 'string') {
      this.actionError = workers;
      this._render();
      return;
    }
    void this._act(
      name,
      `clusters/${encodeURIComponent(name)}/scale`,
      this._json('POST', { workers })
    );
  }

  adapt(name: string, minText: string, maxText: string): void {
    const max = this.options?.limits.max_workers ?? null;
    const minimum = checkWorkers(minText, max);
    const maximum = checkWorkers(maxText, max);
    const problem = [minimum, maximum].find(x => typeof x === 'string') as
      string | undefined;
    if (problem || (minimum as number) > (maximum as number)) {
      this.actionError =
        problem ?? `Adapt: minimum ${minimum} is above maximum ${maximum}`;
      this._render();
      return;
    }
    void this._act(
      name,
      `clusters/${encodeURIComponent(name)}/adapt`,
      this._json('POST', { minimum, maximum })
    );
  }

  shutdown(name: string): void {
    void this._act(name, `clusters/${encodeURIComponent(name)}`, {
      method: 'DELETE'
    });
  }

  private _render(): void {
    // unchanged data: keep the DOM (and what the user is typing into it)
    const key = JSON.stringify([
      this.list,
      this.options,
      this.error,
      this.actionError,
      [...this.busy]
    ]);
    if (key === this._key) {
      return;
    }
    this._key = key;
    const keep = this._focusKey();
    const out: HTMLElement[] = [];
    const list = this.list;
    if (list === null && !this.error) {
      out.push(h('p', { class: 'afhub-muted' }, 'Loading…'));
    } else if (list && !list.enabled) {
      out.push(
        h(
          'p',
          { class: 'afhub-muted' },
          'Dask Gateway is not enabled on this facility (or this server has no afhub Dask routes).'
        )
      );
    }
    if (list && list.enabled) {
      out.push(this._clusters(list.clusters));
      if (this.options) {
        out.push(this._createForm(this.options));
      }
    }
    for (const message of [this.error, this.actionError]) {
      if (message) {
        out.push(h('p', { class: 'afhub-error', role: 'alert' }, message));
      }
    }
    this.node.replaceChildren(...out);
    this._restoreFocus(keep);
  }

  private _clusters(clusters: IDaskCluster[]): HTMLElement {
    const ul = h('ul', {
      class: 'afhub-clusters',
      'aria-label': 'Dask clusters'
    });
    if (clusters.length === 0) {
      ul.append(h('li', { class: 'afhub-muted' }, 'No clusters.'));
    }
    const now = this._clock();
    for (const c of clusters) {
      const busy = this.busy.has(c.name);
      const label = shortName(c.name);
      const scaleInput = h('input', {
        type: 'number',
        min: '0',
        value: String(c.requested),
        class: 'afhub-input',
        'aria-label': `Workers for cluster ${label}`
      }) as HTMLInputElement;
      const minInput = h('input', {
        type: 'number',
        min: '0',
        value: String(c.adapt?.minimum ?? 0),
        class: 'afhub-input',
        'aria-label': `Adapt minimum for cluster ${label}`
      }) as HTMLInputElement;
      const maxInput = h('input', {
        type: 'number',
        min: '0',
        value: String(c.adapt?.maximum ?? Math.max(1, c.requested)),
        class: 'afhub-input',
        'aria-label': `Adapt maximum for cluster ${label}`
      }) as HTMLInputElement;
      const li = h(
        'li',
        {
          class: `afhub-cluster afhub-cluster-${c.status}`,
          'data-cluster': c.name
        },
        h('div', { class: 'afhub-cluster-name', title: c.name }, label),
        h(
          'div',
          { class: 'afhub-note', 'data-summary': '' },
          clusterSummary(c, now)
        ),
        c.dashboard_link
          ? h(
              'a',
              {
                href: c.dashboard_link,
                target: '_blank',
                rel: 'noopener',
                class: 'afhub-link'
              },
              'Dashboard'
            )
          : null,
        this._plots(c, label),
        h(
          'div',
          { class: 'afhub-actions' },
          scaleInput,
          this._button('Scale', `Scale cluster ${label}`, busy, () =>
            this.scale(c.name, scaleInput.value)
          )
        ),
        h(
          'div',
          { class: 'afhub-actions' },
          minInput,
          maxInput,
          this._button('Adapt', `Adapt cluster ${label}`, busy, () =>
            this.adapt(c.name, minInput.value, maxInput.value)
          )
        ),
        h(
          'div',
          { class: 'afhub-actions' },
          this._button(
            busy ? 'Working…' : 'Shut down',
            `Shut down cluster ${label}`,
            busy,
            () => this.shutdown(c.name)
          )
        )
      );
      ul.append(li);
    }
    return ul;
  }

  /** One button per individual plot, for a running cluster with a dashboard. */
  private _plots(c: IDaskCluster, label: string): HTMLElement | null {
    const open = this._openPlot;
    if (!open || c.status !== 'running' || !c.dashboard_link) {
      return null;
    }
    return h(
      'div',
      {
        class: 'afhub-actions afhub-plots',
        role: 'group',
        'aria-label': `Plots of cluster ${label}`
      },
      ...DASHBOARD_PLOTS.map(p =>
        this._button(
          p.title,
          `Open ${p.title} of cluster ${label}`,
          false,
          () => open(c.name, p.id)
        )
      )
    );
  }

  private _createForm(opts: IDaskOptions): HTMLElement {
    const inputs: Record<string, HTMLInputElement | HTMLSelectElement> = {};
    const form = h('form', {
      class: 'afhub-dask-create',
      'aria-label': 'New Dask cluster'
    });
    form.append(h('h4', {}, 'New cluster'));
    for (const f of opts.fields) {
      const id = `afhub-dask-opt-${f.name}`;
      let input: HTMLInputElement | HTMLSelectElement;
      if (f.type === 'select') {
        input = h('select', { id, class: 'afhub-input' }) as HTMLSelectElement;
        for (const c of f.choices ?? []) {
          const o = h(
            'option',
            { value: c.value },
            c.label
          ) as HTMLOptionElement;
          o.selected = c.value === String(f.default);
          input.append(o);
        }
      } else {
        input = h('input', {
          id,
          type: 'number',
          class: 'afhub-input',
          value: String(f.default ?? ''),
          min:
            f.min !== undefined && f.min !== null ? String(f.min) : undefined,
          max:
            f.max !== undefined && f.max !== null ? String(f.max) : undefined,
          step: f.type === 'int' ? '1' : 'any'
        }) as HTMLInputElement;
      }
      inputs[f.name] = input;
      form.append(
        h(
          'label',
          { for: id, class: 'afhub-field' },
          h('span', {}, f.unit ? `${f.label} (${f.unit})` : f.label),
          input
        )
      );
    }
    // an own environment replaces the image: its select is then ignored, so disabled
    const environment = inputs[ENVIRONMENT];
    const image = inputs['image'];
    if (environment && image) {
      const sync = () => {
        image.disabled = !imageApplies({ [ENVIRONMENT]: environment.value });
      };
      environment.addEventListener('change', sync);
      sync();
    }
    const workers = h('input', {
      id: 'afhub-dask-workers',
      type: 'number',
      min: '0',
      value: '1',
      class: 'afhub-input',
      max:
        opts.limits.max_workers !== null
          ? String(opts.limits.max_workers)
          : undefined
    }) as HTMLInputElement;
    form.append(
      h(
        'label',
        { for: 'afhub-dask-workers', class: 'afhub-field' },
        h('span', {}, 'Workers'),
        workers
      )
    );
    const busy = this.busy.has('create');
    const submit = h(
      'button',
      {
        type: 'submit',
        class: 'jp-Button afhub-button',
        'aria-label': 'Create Dask cluster'
      },
      busy ? 'Creating…' : 'Create cluster'
    ) as HTMLButtonElement;
    submit.disabled = busy;
    form.append(h('div', { class: 'afhub-actions' }, submit));
    form.addEventListener('submit', e => {
      e.preventDefault();
      const raw: Record<string, string> = {};
      for (const [k, el] of Object.entries(inputs)) {
        raw[k] = el.value;
      }
      this.create(raw, workers.value);
    });
    return form;
  }

  private _button(
    text: string,
    label: string,
    disabled: boolean,
    onClick: () => void
  ): HTMLButtonElement {
    const b = h(
      'button',
      { type: 'button', class: 'jp-Button afhub-button', 'aria-label': label },
      text
    ) as HTMLButtonElement;
    b.disabled = disabled;
    b.addEventListener('click', onClick);
    return b;
  }

  private _focusKey(): string | null {
    const a = document.activeElement;
    return a && this.node.contains(a)
      ? a.getAttribute('aria-label') || a.id || null
      : null;
  }

  private _restoreFocus(key: string | null): void {
    if (!key) {
      return;
    }
    const el = Array.from(
      this.node.querySelectorAll<HTMLElement>('[aria-label],[id]')
    ).find(e => e.getAttribute('aria-label') === key || e.id === key);
    el?.focus();
  }
}
