/**
 * Pure view logic of the sidebar: from REST answers and a clock to what the panel and the
 * status bar say. No DOM, no network, no timers: everything here is tested with tables in
 * `src/__tests__/model.spec.ts`.
 */
import type {
  IEnvironment,
  IEnvironmentList,
  IGpuInfo,
  ISession,
  ITokenStatus
} from './api';

export type Level = 'ok' | 'warn' | 'error' | 'off';

/** `75` -> `1m 15s`; `3725` -> `1h 02m`; `9` -> `9s`; negative counts as 0. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  }
  const h = Math.floor(s / 3600);
  if (h < 48) {
    return `${h}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  }
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** `ago(now=100, then=88)` -> `12s ago`; `null` -> `never`. Times in seconds. */
export function ago(then: number | null, now: number): string {
  if (then === null || then === undefined) {
    return 'never';
  }
  return `${formatDuration(now - then)} ago`;
}

/**
 * Seconds until the token expires, counted on the client's clock from the moment the status
 * was fetched (`fetchedAt`, client seconds), so a skewed browser clock does not matter.
 */
export function remaining(
  status: ITokenStatus,
  fetchedAt: number,
  now: number
): number | null {
  if (status.expires_in === null || status.expires_in === undefined) {
    return null;
  }
  return Math.max(0, status.expires_in - (now - fetchedAt));
}

export interface ITokenView {
  level: Level;
  /** short word(s) for the status bar: `fresh`, `expiring`, `log in again`, ... */
  short: string;
  /** one sentence for the panel */
  text: string;
  /** the user must log in to the hub again for renewal to resume */
  loginRequired: boolean;
}

/**
 * What the data-access token's state means for the user.
 *
 * `loggedOut` is true when the server itself no longer accepts this browser (the hub
 * session ended); renewal has then stopped whatever the last status said.
 */
export function tokenView(
  status: ITokenStatus | null,
  left: number | null,
  opts: { warnAt: number; loggedOut?: boolean }
): ITokenView {
  if (opts.loggedOut) {
    return {
      level: 'error',
      short: 'renewal stopped: log in again',
      text: 'Logged out of the hub: token renewal stopped. Log in again to resume it.',
      loginRequired: true
    };
  }
  if (status === null) {
    return {
      level: 'off',
      short: '…',
      text: 'Token status not known yet.',
      loginRequired: false
    };
  }
  switch (status.state) {
    case 'disabled':
      return {
        level: 'off',
        short: 'off',
        text: status.message,
        loginRequired: false
      };
    case 'starting':
      return {
        level: 'warn',
        short: 'starting',
        text: status.message,
        loginRequired: false
      };
    case 'login_required':
      return {
        level: 'error',
        short: 'renewal stopped: log in again',
        text: 'Token renewal stopped: log in to the hub again to resume it.',
        loginRequired: true
      };
    default:
      break;
  }
  const expired = left !== null && left <= 0;
  if (expired) {
    return {
      level: 'error',
      short: 'expired',
      text:
        status.state === 'refresh_failing'
          ? `Token expired; renewal is failing: ${status.last_error ?? 'unknown error'}`
          : 'Token expired; waiting for renewal.',
      loginRequired: false
    };
  }
  if (status.state === 'refresh_failing') {
    return {
      level: 'warn',
      short: 'renewal failing',
      text: `Renewal is failing (${status.last_error ?? 'unknown error'}); the current token is kept while valid.`,
      loginRequired: false
    };
  }
  if (left !== null && left <= warnThreshold(status, opts.warnAt)) {
    return {
      level: 'warn',
      short: `expiring in ${formatDuration(left)}`,
      text: `Token expires in ${formatDuration(left)}; renewal is due.`,
      loginRequired: false
    };
  }
  return {
    level: 'ok',
    short: 'fresh',
    text: status.message,
    loginRequired: false
  };
}

/**
 * Seconds before expiry from which a token counts as expiring: `warnAt`, but at most a third
 * of the token's lifetime (as seen from its last refresh), so short-lived tokens that are
 * renewed on schedule read as fresh, as the server renews them at two thirds of their life.
 */
export function warnThreshold(status: ITokenStatus, warnAt: number): number {
  if (status.expires_at !== null && status.last_refresh !== null) {
    const lifetime = status.expires_at - status.last_refresh;
    if (lifetime > 0) {
      return Math.min(warnAt, lifetime / 3);
    }
  }
  return warnAt;
}

/** The status-bar text: `<profile> · token <state>`. */
export function statusBarText(
  session: ISession | null,
  token: ITokenView
): string {
  const profile = session?.profile_display_name || session?.profile || 'afhub';
  return token.level === 'off' && token.short === 'off'
    ? profile
    : `${profile} · token ${token.short}`;
}

/** `2048` MiB -> `2 GiB`; `1536` -> `1.5 GiB`; `500` -> `500 MiB`. */
export function formatMiB(mib: number): string {
  if (mib < 1024) {
    return `${mib} MiB`;
  }
  const gib = mib / 1024;
  return `${Number.isInteger(gib) ? gib : gib.toFixed(1)} GiB`;
}

/** Bytes -> `4 GiB`, `512 MiB`. */
export function formatBytes(bytes: number): string {
  return formatMiB(Math.round(bytes / 2 ** 20));
}

/** The GPU line: devices the server sees (model, memory), else what the profile requested. */
export function gpuLines(gpus: IGpuInfo): string[] {
  if (gpus.devices.length > 0) {
    return gpus.devices.map(
      d =>
        `${d.index}: ${d.name}` +
        (d.memory_total_mib !== null
          ? ` (${formatMiB(d.memory_total_mib)})`
          : '')
    );
  }
  if (gpus.requested > 0) {
    const what = `${gpus.requested} × ${gpus.type || 'GPU'} requested`;
    return [gpus.error ? `${what}; ${gpus.error}` : what];
  }
  return ['none'];
}

/** Label/value rows of the Session section. */
export function sessionRows(session: ISession): [string, string][] {
  const rows: [string, string][] = [];
  rows.push([
    'Profile',
    session.profile_display_name || session.profile || '(none)'
  ]);
  if (session.image) {
    rows.push(['Image', session.image]);
  }
  const arch =
    session.arch && session.arch !== session.machine
      ? `${session.arch} (running on ${session.machine})`
      : session.machine;
  rows.push(['Architecture', arch]);
  const cpu =
    session.cpu.limit ??
    (session.cpu.requested ? Number(session.cpu.requested) : null);
  rows.push([
    'CPU',
    cpu !== null && !Number.isNaN(cpu)
      ? `${cpu} cores` +
        (session.cpu.guarantee ? ` (${session.cpu.guarantee} guaranteed)` : '')
      : session.cpu.available
        ? `${session.cpu.available} cores (no limit)`
        : 'no limit'
  ]);
  rows.push([
    'Memory',
    session.memory.requested ||
      (session.memory.limit ? formatBytes(session.memory.limit) : 'no limit')
  ]);
  rows.push(['GPUs', gpuLines(session.gpus).join('\n')]);
  if (session.user) {
    rows.push([
      'User',
      session.server_name
        ? `${session.user} / ${session.server_name}`
        : session.user
    ]);
  }
  return rows;
}

/** A stable fingerprint of the kernels an environment list offers (changes => refresh specs). */
export function kernelFingerprint(list: IEnvironmentList): string {
  const names: string[] = [];
  for (const env of list.environments.concat(list.facility ?? [])) {
    for (const k of env.kernels) {
      names.push(k.name);
    }
  }
  return names.sort().join('\n');
}

export interface IEnvironmentRow {
  env: IEnvironment;
  /** `runnable`, `installing`, `install-failed`, `not-runnable` */
  status: 'runnable' | 'installing' | 'install-failed' | 'not-runnable';
  /** what to tell the user, e.g. `not runnable: no ipykernel` */
  note: string;
  /** offer the install action */
  canInstall: boolean;
}

/** Environments in display order (the facility's first, then runnable ones, then by name)
 * with their status. */
export function environmentRows(
  list: IEnvironmentList,
  now: number
): IEnvironmentRow[] {
  const facility: IEnvironmentRow[] = list.facility
    ? [
        {
          env: { ...list.facility, facility: true },
          status: 'runnable',
          note: '',
          canInstall: false
        }
      ]
    : [];
  const rows = list.environments.map((env): IEnvironmentRow => {
    const job = env.install;
    if (!env.runnable && job && job.state === 'running') {
      return {
        env,
        status: 'installing',
        note: `installing ipykernel… (${formatDuration(now - job.started)})`,
        canInstall: false
      };
    }
    if (env.runnable) {
      return { env, status: 'runnable', note: '', canInstall: false };
    }
    if (job && job.state === 'failed') {
      return {
        env,
        status: 'install-failed',
        note: `install failed${job.returncode !== null ? ` (exit ${job.returncode})` : ''}: ${env.reason ?? ''}`,
        canInstall: env.can_install_ipykernel
      };
    }
    return {
      env,
      status: 'not-runnable',
      note: `not runnable: ${env.reason ?? 'unknown reason'}`,
      canInstall: env.can_install_ipykernel
    };
  });
  const rank = (r: IEnvironmentRow) => (r.status === 'runnable' ? 0 : 1);
  return facility.concat(
    rows.sort(
      (a, b) =>
        rank(a) - rank(b) ||
        a.env.name.localeCompare(b.env.name) ||
        a.env.prefix.localeCompare(b.env.prefix)
    )
  );
}

export const ALL_SECTIONS = [
  'session',
  'token',
  'environments',
  'dask'
] as const;
export type SectionId = (typeof ALL_SECTIONS)[number];

/** The sections setting, cleaned: known ids, no duplicates, in the given order. */
export function shownSections(setting: unknown): SectionId[] {
  if (!Array.isArray(setting)) {
    return [...ALL_SECTIONS];
  }
  const out: SectionId[] = [];
  for (const s of setting) {
    if ((ALL_SECTIONS as readonly string[]).includes(s) && !out.includes(s)) {
      out.push(s as SectionId);
    }
  }
  return out;
}

/** Short cluster name for display (gateway names are `<prefix>.<hex>`). */
export function shortName(name: string): string {
  const dot = name.lastIndexOf('.');
  const tail = dot >= 0 ? name.slice(dot + 1) : name;
  return tail.length > 12 ? tail.slice(0, 12) : tail;
}
