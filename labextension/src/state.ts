/**
 * The sidebar's state and the calls that change it. One `SidebarState` per JupyterLab
 * session is shared by the panel and the status-bar item. Every call records its outcome
 * (data or error message) in the state and emits `changed`; failures also reject, so a
 * `Poll` driving the call backs off. A 401/403 from the server means the browser's hub
 * session ended (logout): `loggedOut` is then set and the status bar says renewal stopped.
 */
import { ISignal, Signal } from '@lumino/signaling';

import type {
  AfhubAPI,
  IAccessTest,
  IDataAccess,
  IEnvironmentList,
  ISession,
  ITokenStatus
} from './api';
import { kernelFingerprint } from './model';
import { APIError } from './request';

/** The client's clock in seconds (one place, so tests can pass their own). */
export type Clock = () => number;
export const wallClock: Clock = () => Date.now() / 1000;

/** Wait for every call; then reject with the first failure, if any (for a poll's backoff). */
export async function settleAll(calls: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(calls);
  const failed = results.find(r => r.status === 'rejected') as
    PromiseRejectedResult | undefined;
  if (failed) {
    throw failed.reason;
  }
}

export class SidebarState {
  constructor(
    readonly api: AfhubAPI,
    readonly clock: Clock = wallClock
  ) {}

  session: ISession | null = null;
  sessionError: string | null = null;
  token: ITokenStatus | null = null;
  tokenFetchedAt = 0;
  tokenError: string | null = null;
  renewing = false;
  /** the storage endpoints (fetched with the token; they do not change while the server runs) */
  data: IDataAccess | null = null;
  dataError: string | null = null;
  /** the last "test access" of each endpoint, by endpoint name */
  accessTests: Record<string, IAccessTest> = {};
  accessTesting = new Set<string>();
  environments: IEnvironmentList | null = null;
  environmentsError: string | null = null;
  installing = new Set<string>();
  actionError: string | null = null;
  loggedOut = false;

  get changed(): ISignal<this, string> {
    return this._changed;
  }

  /** Emitted with the new fingerprint when the kernels the environments offer change. */
  get kernelsChanged(): ISignal<this, string> {
    return this._kernelsChanged;
  }

  async fetchSession(): Promise<void> {
    await this._run(
      'session',
      async () => {
        this.session = await this.api.session();
        this.sessionError = null;
      },
      e => (this.sessionError = e)
    );
  }

  fetchToken(): Promise<void> {
    return this._token(() => this.api.token());
  }

  /** POST: renew now (the hub refreshes upstream unless it just did). */
  async renewToken(): Promise<void> {
    if (this.renewing) {
      return;
    }
    this.renewing = true;
    this._changed.emit('token');
    try {
      await this._token(() => this.api.refreshToken());
    } finally {
      this.renewing = false;
      this._changed.emit('token');
    }
  }

  async fetchData(): Promise<void> {
    await this._run(
      'token',
      async () => {
        this.data = await this.api.data();
        this.dataError = null;
      },
      e => (this.dataError = e)
    );
  }

  /** Open a small file at `endpoint` with the current token; the outcome is kept per endpoint. */
  async testAccess(endpoint: string): Promise<void> {
    if (this.accessTesting.has(endpoint)) {
      return;
    }
    this.accessTesting.add(endpoint);
    this._changed.emit('token');
    try {
      await this._run(
        'token',
        async () => {
          this.accessTests = {
            ...this.accessTests,
            [endpoint]: await this.api.testAccess(endpoint)
          };
          this.dataError = null;
        },
        e => (this.dataError = e)
      );
    } catch {
      return; // recorded in dataError and shown in the panel
    } finally {
      this.accessTesting.delete(endpoint);
      this._changed.emit('token');
    }
  }

  async fetchEnvironments(): Promise<void> {
    await this._run(
      'environments',
      async () => {
        const list = await this.api.environments();
        const before = this.environments
          ? kernelFingerprint(this.environments)
          : null;
        this.environments = list;
        this.environmentsError = null;
        for (const env of list.environments) {
          if (!(env.install && env.install.state === 'running')) {
            this.installing.delete(env.id);
          }
        }
        const after = kernelFingerprint(list);
        if (before !== null && before !== after) {
          this._kernelsChanged.emit(after);
        }
      },
      e => (this.environmentsError = e)
    );
  }

  /** Ask the server to make an environment runnable (install ipykernel into it). */
  async install(id: string): Promise<void> {
    this.installing.add(id);
    this.actionError = null;
    this._changed.emit('environments');
    try {
      await this._run(
        'environments',
        async () => {
          await this.api.makeRunnable(id);
        },
        e => {
          this.installing.delete(id);
          this.actionError = e;
        }
      );
    } catch {
      return; // recorded in actionError and shown in the panel
    }
    await this.fetchEnvironments().catch(() => undefined);
  }

  /** Fetch everything the panel shows. Rejects if any part failed (for the poll's backoff). */
  async fetchAll(sections: readonly string[]): Promise<void> {
    const calls: Promise<void>[] = [];
    if (sections.includes('session') || !this.session) {
      calls.push(this.fetchSession());
    }
    calls.push(this.fetchToken());
    if (!this.data && sections.includes('token')) {
      calls.push(this.fetchData());
    }
    if (sections.includes('environments')) {
      calls.push(this.fetchEnvironments());
    }
    await settleAll(calls);
  }

  private _token(call: () => Promise<ITokenStatus>): Promise<void> {
    return this._run(
      'token',
      async () => {
        this.token = await call();
        this.tokenFetchedAt = this.clock();
        this.tokenError = null;
      },
      e => (this.tokenError = e)
    );
  }

  private async _run(
    what: string,
    call: () => Promise<void>,
    onError: (message: string) => void
  ): Promise<void> {
    try {
      await call();
      if (this.loggedOut) {
        this.loggedOut = false;
        this._changed.emit('login');
      }
    } catch (error) {
      const e =
        error instanceof APIError ? error : new APIError(0, String(error));
      if (e.unauthorized) {
        this.loggedOut = true;
      }
      onError(e.message);
      this._changed.emit(what);
      throw e;
    }
    this._changed.emit(what);
  }

  private _changed = new Signal<this, string>(this);
  private _kernelsChanged = new Signal<this, string>(this);
}
