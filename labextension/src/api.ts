/**
 * Shapes of the afhub server extension's REST answers (see `server_ext/` in the afhub
 * repository) and one small client per route. Nothing here holds or shows the data token:
 * the token route answers its status only.
 */
import { ServerConnection } from '@jupyterlab/services';

import { requestAPI } from './request';

/** `GET afhub/api/session`: what this server runs on. */
export interface ISession {
  user: string | null;
  server_name: string;
  profile: string | null;
  profile_display_name: string | null;
  image: string | null;
  arch: string | null;
  machine: string;
  cpu: {
    limit: number | null;
    guarantee: number | null;
    requested: string | null;
    available: number | null;
  };
  memory: {
    limit: number | null;
    guarantee: number | null;
    requested: string | null;
  };
  gpus: IGpuInfo;
  hub_login_url: string | null;
  hub_home_url: string | null;
}

export interface IGpuInfo {
  requested: number;
  type: string | null;
  visible: string | null;
  devices: IGpuDevice[];
  error: string | null;
}

export interface IGpuDevice {
  index: number;
  name: string;
  memory_total_mib: number | null;
}

export type TokenState =
  'starting' | 'ok' | 'refresh_failing' | 'login_required' | 'disabled';

/** `GET|POST afhub/api/token`: the data-access token's status (never the token). */
export interface ITokenStatus {
  state: TokenState;
  message: string;
  path: string;
  valid: boolean;
  expires_at: number | null;
  expires_in: number | null;
  audience: string | null;
  scope: string | null;
  last_refresh: number | null;
  last_attempt: number | null;
  last_error: string | null;
  next_attempt: number | null;
  failures: number;
  renewals: number;
}

/** One storage endpoint of `GET afhub/api/data`. */
export interface IDataEndpoint {
  name: string;
  url: string;
}

/** `GET afhub/api/data`: the storage the token is for (from the hub's contract). */
export interface IDataAccess {
  enabled: boolean;
  endpoints: IDataEndpoint[];
  audience: string | null;
  test_path: string | null;
}

export type AccessReason =
  | 'ok'
  | 'no_token'
  | 'expired'
  | 'wrong_audience'
  | 'not_in_scope'
  | 'denied'
  | 'not_found'
  | 'tls'
  | 'server_down'
  | 'error';

/** `POST afhub/api/data/test`: a small file opened at an endpoint with the current token. */
export interface IAccessTest {
  endpoint: string;
  url: string;
  path: string;
  ok: boolean;
  reason: AccessReason;
  message: string;
  server_message: string;
  seconds: number;
  checked_at: number;
}

export interface IKernelInfo {
  name: string;
  display_name: string;
  language: string;
  built: boolean;
  aliases: string[];
}

export interface IInstallJob {
  state: 'running' | 'succeeded' | 'failed';
  command: string[];
  returncode: number | null;
  output: string;
  started: number;
  finished: number | null;
}

/** One environment of `GET afhub/api/environments`. */
export interface IEnvironment {
  id: string;
  name: string;
  prefix: string;
  kind: string;
  source: string;
  location: string;
  python: string | null;
  has_ipykernel: boolean;
  runnable: boolean;
  reason: string | null;
  can_install_ipykernel: boolean;
  problems: string[];
  kernels: IKernelInfo[];
  install: IInstallJob | null;
  /** the server's own environment: the facility's (image or server environment) */
  facility?: boolean;
}

export interface IEnvironmentList {
  enabled: boolean;
  environments: IEnvironment[];
  skipped: { path: string; reason: string }[];
  /** the facility's environment (the server's own), listed first; absent on older servers */
  facility?: IEnvironment | null;
}

/** The REST client the views use; one instance per JupyterLab session. */
export class AfhubAPI {
  constructor(readonly settings: ServerConnection.ISettings) {}

  session(): Promise<ISession> {
    return requestAPI<ISession>('session', this.settings);
  }

  token(): Promise<ITokenStatus> {
    return requestAPI<ITokenStatus>('token', this.settings);
  }

  refreshToken(): Promise<ITokenStatus> {
    return requestAPI<ITokenStatus>('token', this.settings, { method: 'POST' });
  }

  data(): Promise<IDataAccess> {
    return requestAPI<IDataAccess>('data', this.settings);
  }

  testAccess(endpoint: string, path?: string): Promise<IAccessTest> {
    return requestAPI<IAccessTest>('data/test', this.settings, {
      method: 'POST',
      body: JSON.stringify(path ? { endpoint, path } : { endpoint })
    });
  }

  environments(): Promise<IEnvironmentList> {
    return requestAPI<IEnvironmentList>('environments', this.settings);
  }

  makeRunnable(id: string): Promise<IEnvironment> {
    return requestAPI<IEnvironment>(
      `environments/${encodeURIComponent(id)}/kernel`,
      this.settings,
      { method: 'POST' }
    );
  }
}
