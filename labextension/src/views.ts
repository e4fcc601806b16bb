/**
 * DOM builders of the sidebar's sections. Each takes plain data and callbacks and returns an
 * element; no network, no timers, no JupyterLab services, so jest renders them directly.
 * Controls are real <button>/<a> elements with labels (keyboard and screen-reader friendly);
 * colours come from JupyterLab's theme variables (light and dark).
 */
import type { IEnvironmentRow, ITokenView } from './model';
import type {
  IAccessTest,
  IDataAccess,
  ISession,
  ITokenStatus,
  IKernelInfo
} from './api';
import { ago, formatDuration, sessionRows } from './model';

type Child = Node | string | null | undefined | false;

/** `h('div', {class: 'x'}, child, ...)`: a tiny element builder. */
export function h(
  tag: string,
  attrs: Record<string, string | undefined> = {},
  ...children: Child[]
): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined) {
      el.setAttribute(k, v);
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) {
      continue;
    }
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

function button(
  label: string,
  onClick: () => void,
  attrs: Record<string, string | undefined> = {}
): HTMLButtonElement {
  const b = h(
    'button',
    { type: 'button', class: 'jp-Button afhub-button', ...attrs },
    label
  ) as HTMLButtonElement;
  b.addEventListener('click', () => onClick());
  return b;
}

function errorLine(message: string | null): HTMLElement | null {
  return message
    ? h('p', { class: 'afhub-error', role: 'alert' }, message)
    : null;
}

function rows(pairs: [string, string][]): HTMLElement {
  const dl = h('dl', { class: 'afhub-rows' });
  for (const [k, v] of pairs) {
    dl.append(h('dt', {}, k), h('dd', {}, v));
  }
  return dl;
}

/** Session: profile, image, architecture, CPU, memory, GPUs. */
export function renderSession(
  session: ISession | null,
  error: string | null
): HTMLElement {
  const body = h('div', { class: 'afhub-section-body' });
  if (session) {
    body.append(rows(sessionRows(session)));
  } else if (!error) {
    body.append(h('p', { class: 'afhub-muted' }, 'Loading…'));
  }
  const err = errorLine(error && `Cannot read the session: ${error}`);
  if (err) {
    body.append(err);
  }
  return body;
}

export interface ITokenSectionProps {
  status: ITokenStatus | null;
  view: ITokenView;
  left: number | null;
  now: number;
  error: string | null;
  renewing: boolean;
  loginUrl: string | null;
  onRenew: () => void;
  /** the storage endpoints, each with a "test access" action (absent: not shown) */
  storage?: IStorageProps;
}

export interface IStorageProps {
  data: IDataAccess | null;
  tests: Record<string, IAccessTest>;
  testing: Set<string>;
  error: string | null;
  onTest: (endpoint: string) => void;
}

/** What a "test access" reason means, for the line under the endpoint. */
export const ACCESS_REASON_TITLES: Record<IAccessTest['reason'], string> = {
  ok: 'Access works',
  no_token: 'No token',
  expired: 'Token expired',
  wrong_audience: 'Wrong audience',
  not_in_scope: 'Path not in scope',
  denied: 'Refused',
  not_found: 'File not found',
  tls: 'TLS failed',
  server_down: 'Server down',
  error: 'Error'
};

/**
 * The storage the token is for: one row per endpoint (name, URL, "Test access" button) and
 * the last test's outcome (`data-reason`), the server's own message in its title.
 */
export function renderStorage(p: IStorageProps): HTMLElement | null {
  const endpoints = p.data?.enabled ? p.data.endpoints : [];
  const err = errorLine(p.error && `Cannot test access: ${p.error}`);
  if (!endpoints.length) {
    return err;
  }
  const list = h('ul', {
    class: 'afhub-storage',
    'aria-label': 'Storage endpoints'
  });
  for (const e of endpoints) {
    const testing = p.testing.has(e.name);
    const b = button(
      testing ? 'Testing…' : 'Test access',
      () => p.onTest(e.name),
      {
        'aria-label': `Test access to ${e.name}`
      }
    );
    b.disabled = testing;
    const t = p.tests[e.name];
    const outcome = t
      ? h(
          'p',
          {
            class: `afhub-access afhub-level-${t.ok ? 'ok' : 'error'}`,
            'data-reason': t.reason,
            role: 'status',
            title: t.server_message || undefined
          },
          `${ACCESS_REASON_TITLES[t.reason] ?? t.reason}: ${t.message}`
        )
      : null;
    list.append(
      h(
        'li',
        { 'data-endpoint': e.name },
        h('span', { class: 'afhub-endpoint-name' }, e.name),
        ' ',
        h('span', { class: 'afhub-path' }, e.url),
        ' ',
        b,
        outcome
      )
    );
  }
  const body = h('div', { class: 'afhub-storage-body' }, list);
  if (p.data?.test_path) {
    body.append(
      h('p', { class: 'afhub-muted' }, `Test opens ${p.data.test_path}`)
    );
  }
  if (err) {
    body.append(err);
  }
  return body;
}

/**
 * Data access: state, audience, expiry countdown (`data-countdown` span, updated in place
 * each second by the panel), last refresh, error; a refresh button. Never the token.
 */
export function renderToken(p: ITokenSectionProps): HTMLElement {
  const body = h('div', { class: 'afhub-section-body' });
  body.append(
    h(
      'p',
      {
        class: `afhub-state afhub-level-${p.view.level}`,
        'data-state': p.status?.state ?? 'unknown'
      },
      p.view.text
    )
  );
  const s = p.status;
  if (s && s.state !== 'disabled') {
    const dl = rows([
      ['Audience', s.audience || '(default)'],
      ['Last refresh', ago(s.last_refresh, p.now)]
    ]);
    const countdown = h(
      'span',
      { class: 'afhub-countdown', 'data-countdown': '' },
      p.left === null ? 'unknown' : formatDuration(p.left)
    );
    dl.prepend(h('dt', {}, 'Expires in'), h('dd', {}, countdown));
    if (s.path) {
      dl.append(
        h('dt', {}, 'File'),
        h('dd', { class: 'afhub-path', title: 'BEARER_TOKEN_FILE' }, s.path)
      );
    }
    if (s.last_error) {
      dl.append(
        h('dt', {}, 'Last error'),
        h('dd', { class: 'afhub-error' }, s.last_error)
      );
    }
    body.append(dl);
  }
  const err = errorLine(p.error && `Cannot read the token status: ${p.error}`);
  if (err) {
    body.append(err);
  }
  const actions = h('div', { class: 'afhub-actions' });
  if (s && s.state !== 'disabled') {
    const b = button(p.renewing ? 'Refreshing…' : 'Refresh token', p.onRenew, {
      'aria-label': 'Refresh the data-access token now'
    });
    b.disabled = p.renewing;
    actions.append(b);
  }
  if (p.view.loginRequired && p.loginUrl) {
    actions.append(
      h(
        'a',
        {
          class: 'afhub-login',
          href: p.loginUrl,
          target: '_blank',
          rel: 'noopener'
        },
        'Log in to the hub again'
      )
    );
  }
  if (actions.childNodes.length) {
    body.append(actions);
  }
  const storage = p.storage ? renderStorage(p.storage) : null;
  if (storage) {
    body.append(storage);
  }
  return body;
}

export interface IEnvironmentsProps {
  rows: IEnvironmentRow[];
  enabled: boolean;
  skipped: number;
  error: string | null;
  actionError: string | null;
  installing: Set<string>;
  onOpen: (kernel: IKernelInfo, what: 'notebook' | 'console') => void;
  onInstall: (id: string) => void;
}

/** Environments and their kernels: open a notebook or console; not-runnable with the reason. */
export function renderEnvironments(p: IEnvironmentsProps): HTMLElement {
  const body = h('div', { class: 'afhub-section-body' });
  if (!p.enabled) {
    body.append(
      h(
        'p',
        { class: 'afhub-muted' },
        'Environment kernel discovery is off on this server.'
      )
    );
  } else if (p.rows.length === 0 && !p.error) {
    body.append(h('p', { class: 'afhub-muted' }, 'No environments found.'));
  }
  const list = h('ul', { class: 'afhub-envs', 'aria-label': 'Environments' });
  for (const r of p.rows) {
    const env = r.env;
    const li = h(
      'li',
      {
        class: `afhub-env afhub-env-${r.status}`,
        'data-env-id': env.id,
        'data-env-name': env.name
      },
      h(
        'div',
        { class: 'afhub-env-name', title: env.prefix },
        env.name,
        h(
          'span',
          { class: 'afhub-muted' },
          env.facility ? ' facility environment' : ` ${env.kind}`
        )
      )
    );
    for (const k of env.kernels) {
      li.append(
        h(
          'div',
          { class: 'afhub-kernel', 'data-kernel': k.name },
          h(
            'span',
            {
              class: 'afhub-kernel-name',
              title: `${k.display_name} (${k.name})`
            },
            k.display_name
          ),
          button('Notebook', () => p.onOpen(k, 'notebook'), {
            'aria-label': `New notebook with ${k.display_name}`
          }),
          button('Console', () => p.onOpen(k, 'console'), {
            'aria-label': `New console with ${k.display_name}`
          })
        )
      );
    }
    if (r.note) {
      li.append(
        h(
          'div',
          {
            class: r.status === 'install-failed' ? 'afhub-error' : 'afhub-note'
          },
          r.note
        )
      );
    }
    if (env.install && env.install.state === 'failed' && env.install.output) {
      li.append(
        h(
          'details',
          {},
          h('summary', {}, 'Install output'),
          h('pre', {}, env.install.output)
        )
      );
    }
    if (r.canInstall) {
      const busy = p.installing.has(env.id);
      const b = button(
        busy ? 'Installing…' : 'Install ipykernel',
        () => p.onInstall(env.id),
        {
          'aria-label': `Install ipykernel into ${env.name}`
        }
      );
      b.disabled = busy;
      li.append(h('div', { class: 'afhub-actions' }, b));
    }
    list.append(li);
  }
  body.append(list);
  if (p.skipped) {
    body.append(
      h(
        'p',
        { class: 'afhub-muted' },
        `${p.skipped} location(s) skipped (see the server log).`
      )
    );
  }
  for (const e of [
    p.error && `Cannot list environments: ${p.error}`,
    p.actionError
  ]) {
    const err = errorLine(e || null);
    if (err) {
      body.append(err);
    }
  }
  return body;
}
