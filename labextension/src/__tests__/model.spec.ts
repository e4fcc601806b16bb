/**
 * View logic of the sidebar as tables: durations, token states, session rows, environment
 * rows, kernel fingerprints, the sections setting.
 */
import type { IEnvironment, IEnvironmentList, ITokenStatus } from '../api';
import { env, session, token } from './fixtures';
import {
  ago,
  environmentRows,
  formatDuration,
  gpuLines,
  kernelFingerprint,
  remaining,
  sessionRows,
  shownSections,
  statusBarText,
  tokenView
} from '../model';

describe('formatDuration', () => {
  it.each([
    [0, '0s'],
    [9.7, '9s'],
    [-5, '0s'],
    [60, '1m 00s'],
    [75, '1m 15s'],
    [3599, '59m 59s'],
    [3725, '1h 02m'],
    [49 * 3600, '2d 1h']
  ])('%p s -> %p', (s, text) => {
    expect(formatDuration(s)).toBe(text);
  });

  it('says never for a missing time', () => {
    expect(ago(null, 100)).toBe('never');
    expect(ago(88, 100)).toBe('12s ago');
  });
});

describe('remaining', () => {
  it('counts down on the client clock from the fetch', () => {
    expect(remaining(token({ expires_in: 600 }), 100, 130)).toBe(570);
    expect(remaining(token({ expires_in: 10 }), 100, 130)).toBe(0);
    expect(remaining(token({ expires_in: null }), 100, 130)).toBeNull();
  });
});

describe('tokenView', () => {
  const warnAt = 120;
  it.each<
    [string, ITokenStatus | null, number | null, boolean, string, string]
  >([
    ['fresh', token(), 500, false, 'ok', 'fresh'],
    ['expiring', token(), 100, false, 'warn', 'expiring in 1m 40s'],
    // a 40 s token renewed on schedule is fresh until its last third
    [
      'short-lived fresh',
      token({ expires_at: 1040, last_refresh: 1000 }),
      20,
      false,
      'ok',
      'fresh'
    ],
    [
      'short-lived late',
      token({ expires_at: 1040, last_refresh: 1000 }),
      12,
      false,
      'warn',
      'expiring in 12s'
    ],
    ['expired', token({ valid: false }), 0, false, 'error', 'expired'],
    [
      'failing',
      token({ state: 'refresh_failing', last_error: 'hub 502' }),
      500,
      false,
      'warn',
      'renewal failing'
    ],
    [
      'login required',
      token({ state: 'login_required' }),
      500,
      false,
      'error',
      'renewal stopped: log in again'
    ],
    [
      'logged out wins',
      token(),
      500,
      true,
      'error',
      'renewal stopped: log in again'
    ],
    [
      'disabled',
      token({
        state: 'disabled',
        message: 'token delivery is not enabled on this server'
      }),
      null,
      false,
      'off',
      'off'
    ],
    [
      'starting',
      token({ state: 'starting', expires_in: null }),
      null,
      false,
      'warn',
      'starting'
    ],
    ['unknown', null, null, false, 'off', '…']
  ])('%s', (_name, status, left, loggedOut, level, short) => {
    const v = tokenView(status, left, { warnAt, loggedOut });
    expect(v.level).toBe(level);
    expect(v.short).toBe(short);
    expect(v.loginRequired).toBe(short.includes('log in'));
  });

  it('names the failure in the panel text', () => {
    const v = tokenView(
      token({ state: 'refresh_failing', last_error: 'hub answered 502' }),
      0,
      { warnAt }
    );
    expect(v.text).toContain('hub answered 502');
  });

  it('builds the status-bar text from profile and token', () => {
    const fresh = tokenView(token(), 500, { warnAt });
    expect(statusBarText(session(), fresh)).toBe('GPU (A100) · token fresh');
    const off = tokenView(token({ state: 'disabled' }), null, { warnAt });
    expect(statusBarText(session({ profile_display_name: null }), off)).toBe(
      'gpu'
    );
    expect(
      statusBarText(null, tokenView(null, null, { warnAt, loggedOut: true }))
    ).toBe('afhub · token renewal stopped: log in again');
  });
});

describe('session rows', () => {
  it('lists what the server runs on', () => {
    expect(sessionRows(session())).toEqual([
      ['Profile', 'GPU (A100)'],
      ['Image', 'ghcr.io/af/analysis:2026.11'],
      ['Architecture', 'x86_64'],
      ['CPU', '4 cores'],
      ['Memory', '8G'],
      ['GPUs', 'none'],
      ['User', 'carol']
    ]);
  });

  it('says when the requested architecture is not the machine', () => {
    const rows = Object.fromEntries(
      sessionRows(session({ arch: 'aarch64', image: null }))
    );
    expect(rows['Architecture']).toBe('aarch64 (running on x86_64)');
    expect(rows['Image']).toBeUndefined();
  });

  it('falls back to what is available without limits', () => {
    const rows = Object.fromEntries(
      sessionRows(
        session({
          cpu: { limit: null, guarantee: null, requested: null, available: 2 },
          memory: { limit: null, guarantee: null, requested: null },
          server_name: 'gpu1'
        })
      )
    );
    expect(rows['CPU']).toBe('2 cores (no limit)');
    expect(rows['Memory']).toBe('no limit');
    const limitOnly = Object.fromEntries(
      sessionRows(
        session({
          memory: { limit: 2 ** 31, guarantee: null, requested: null }
        })
      )
    );
    expect(limitOnly['Memory']).toBe('2 GiB');
    expect(rows['User']).toBe('carol / gpu1');
  });

  it.each([
    [
      { requested: 0, type: null, visible: null, devices: [], error: null },
      ['none']
    ],
    [
      {
        requested: 1,
        type: 'a100',
        visible: '0',
        devices: [
          { index: 0, name: 'NVIDIA A100-SXM4-40GB', memory_total_mib: 40960 }
        ],
        error: null
      },
      ['0: NVIDIA A100-SXM4-40GB (40 GiB)']
    ],
    [
      {
        requested: 2,
        type: 'a100',
        visible: null,
        devices: [],
        error: 'nvidia-smi failed: no devices'
      },
      ['2 × a100 requested; nvidia-smi failed: no devices']
    ],
    [
      {
        requested: 1,
        type: null,
        visible: null,
        devices: [{ index: 1, name: 'Tesla T4', memory_total_mib: null }],
        error: null
      },
      ['1: Tesla T4']
    ]
  ])('GPUs %#', (gpus, lines) => {
    expect(gpuLines(gpus)).toEqual(lines);
  });
});

describe('environments', () => {
  const list = (envs: IEnvironment[]): IEnvironmentList => ({
    enabled: true,
    environments: envs,
    skipped: []
  });

  it("puts the facility's environment first", () => {
    const rows = environmentRows(
      {
        ...list([env({ id: '1', name: 'alpha' })]),
        facility: env({ id: 'facility', name: 'zz-analysis', kind: 'facility' })
      },
      0
    );
    expect(rows.map(r => [r.env.name, r.env.facility, r.status])).toEqual([
      ['zz-analysis', true, 'runnable'],
      ['alpha', undefined, 'runnable']
    ]);
  });

  it('puts runnable environments first, then by name, with the reason', () => {
    const rows = environmentRows(
      list([
        env({ id: '1', name: 'zeta' }),
        env({
          id: '2',
          name: 'alpha',
          runnable: false,
          reason: 'no ipykernel',
          can_install_ipykernel: true,
          kernels: []
        }),
        env({ id: '3', name: 'beta' })
      ]),
      0
    );
    expect(rows.map(r => [r.env.name, r.status, r.note, r.canInstall])).toEqual(
      [
        ['beta', 'runnable', '', false],
        ['zeta', 'runnable', '', false],
        ['alpha', 'not-runnable', 'not runnable: no ipykernel', true]
      ]
    );
  });

  it('shows install progress and failures', () => {
    const job = { command: ['pip'], output: 'ERROR: no network', started: 100 };
    const rows = environmentRows(
      list([
        env({
          id: '1',
          name: 'a',
          runnable: false,
          reason: 'no ipykernel',
          can_install_ipykernel: true,
          kernels: [],
          install: {
            ...job,
            state: 'running',
            returncode: null,
            finished: null
          }
        }),
        env({
          id: '2',
          name: 'b',
          runnable: false,
          reason: 'no ipykernel',
          can_install_ipykernel: true,
          kernels: [],
          install: { ...job, state: 'failed', returncode: 1, finished: 130 }
        })
      ]),
      112
    );
    expect(rows.map(r => [r.status, r.note, r.canInstall])).toEqual([
      ['installing', 'installing ipykernel… (12s)', false],
      ['install-failed', 'install failed (exit 1): no ipykernel', true]
    ]);
  });

  it('fingerprints the kernels, not their order or other fields', () => {
    const a = list([
      env({ id: '1' }),
      env({
        id: '2',
        kernels: [
          {
            name: 'other',
            display_name: 'O',
            language: 'python',
            built: false,
            aliases: []
          }
        ]
      })
    ]);
    const b = list([...a.environments].reverse());
    expect(kernelFingerprint(a)).toBe(kernelFingerprint(b));
    const c = list([
      ...a.environments,
      env({
        id: '3',
        kernels: [
          {
            name: 'new-env',
            display_name: 'N',
            language: 'python',
            built: true,
            aliases: []
          }
        ]
      })
    ]);
    expect(kernelFingerprint(c)).not.toBe(kernelFingerprint(a));
  });
});

describe('sections setting', () => {
  it.each<[unknown, string[]]>([
    [undefined, ['session', 'token', 'environments', 'dask']],
    [
      ['dask', 'session'],
      ['dask', 'session']
    ],
    [['token', 'token', 'bogus'], ['token']],
    [[], []]
  ])('%p', (setting, shown) => {
    expect(shownSections(setting)).toEqual(shown);
  });
});
