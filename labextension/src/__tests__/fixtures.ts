/** REST answers as the afhub server extension gives them, for the view tests. */
import type { IEnvironment, ISession, ITokenStatus } from '../api';

export function token(over: Partial<ITokenStatus> = {}): ITokenStatus {
  return {
    state: 'ok',
    message: 'token is fresh',
    path: '/run/user/1000/bt_u1000',
    valid: true,
    expires_at: 2000,
    expires_in: 600,
    audience: 'https://wlcg.cern.ch/jwt/v1/any',
    scope: 'storage.read:/',
    last_refresh: 1000,
    last_attempt: 1000,
    last_error: null,
    next_attempt: 1500,
    failures: 0,
    renewals: 3,
    ...over
  };
}

export function session(over: Partial<ISession> = {}): ISession {
  return {
    user: 'carol',
    server_name: '',
    profile: 'gpu',
    profile_display_name: 'GPU (A100)',
    image: 'ghcr.io/af/analysis:2026.11',
    arch: 'x86_64',
    machine: 'x86_64',
    cpu: { limit: 4, guarantee: null, requested: '4', available: 2 },
    memory: { limit: 8 * 2 ** 30, guarantee: null, requested: '8G' },
    gpus: { requested: 0, type: null, visible: null, devices: [], error: null },
    hub_login_url: '/hub/login?next=/user/carol/',
    hub_home_url: '/hub/home',
    ...over
  };
}

export function env(over: Partial<IEnvironment> = {}): IEnvironment {
  return {
    id: 'a1b2c3d4e5f6',
    name: 'physics',
    prefix: '/home/carol/envs/physics',
    kind: 'venv',
    source: 'root',
    location: '/home/carol/envs',
    python: '/home/carol/envs/physics/bin/python',
    has_ipykernel: true,
    runnable: true,
    reason: null,
    can_install_ipykernel: false,
    problems: [],
    kernels: [
      {
        name: 'physics',
        display_name: 'Python (physics)',
        language: 'python',
        built: true,
        aliases: []
      }
    ],
    install: null,
    ...over
  };
}
