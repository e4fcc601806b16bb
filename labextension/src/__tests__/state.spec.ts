/**
 * SidebarState against a scripted REST client (the one boundary faked here; the real routes
 * are exercised by the Chromium test through the hub): errors recorded and re-thrown for the
 * poll's backoff, logout detection, kernel-change signal.
 */
import type { AfhubAPI, IEnvironmentList } from '../api';
import { APIError } from '../request';
import { SidebarState } from '../state';
import { env, token } from './fixtures';

function api(over: Partial<Record<keyof AfhubAPI, jest.Mock>>): AfhubAPI {
  return over as unknown as AfhubAPI;
}

describe('SidebarState', () => {
  it('records the token and when it was fetched', async () => {
    const state = new SidebarState(
      api({ token: jest.fn().mockResolvedValue(token()) }),
      () => 42
    );
    const seen: string[] = [];
    state.changed.connect((_, what) => seen.push(what));
    await state.fetchToken();
    expect(state.token!.state).toBe('ok');
    expect(state.tokenFetchedAt).toBe(42);
    expect(seen).toEqual(['token']);
  });

  it('keeps the last data, shows the error and rejects (for backoff)', async () => {
    const call = jest
      .fn()
      .mockResolvedValueOnce(token())
      .mockRejectedValueOnce(new APIError(502, 'hub unreachable'));
    const state = new SidebarState(api({ token: call }));
    await state.fetchToken();
    await expect(state.fetchToken()).rejects.toThrow('hub unreachable');
    expect(state.token).not.toBeNull();
    expect(state.tokenError).toBe('hub unreachable');
    expect(state.loggedOut).toBe(false);
  });

  it('treats 403 as logged out until a call succeeds again', async () => {
    const call = jest
      .fn()
      .mockRejectedValueOnce(new APIError(403, 'Forbidden'))
      .mockResolvedValueOnce(token());
    const state = new SidebarState(api({ token: call }));
    await expect(state.fetchToken()).rejects.toThrow();
    expect(state.loggedOut).toBe(true);
    await state.fetchToken();
    expect(state.loggedOut).toBe(false);
  });

  it('signals when the kernels on offer change, not on the first answer', async () => {
    const first: IEnvironmentList = {
      enabled: true,
      skipped: [],
      environments: [env()]
    };
    const second: IEnvironmentList = {
      ...first,
      environments: [
        env(),
        env({
          id: 'bbbbbbbbbbbb',
          name: 'new',
          kernels: [
            {
              name: 'new',
              display_name: 'New',
              language: 'python',
              built: true,
              aliases: []
            }
          ]
        })
      ]
    };
    const call = jest
      .fn()
      .mockResolvedValueOnce(first)
      .mockResolvedValueOnce(first)
      .mockResolvedValueOnce(second);
    const state = new SidebarState(api({ environments: call }));
    const changes: string[] = [];
    state.kernelsChanged.connect((_, fp) => changes.push(fp));
    await state.fetchEnvironments();
    await state.fetchEnvironments();
    expect(changes).toEqual([]);
    await state.fetchEnvironments();
    expect(changes).toEqual(['new\nphysics']);
  });

  it('shows a failed install request and forgets it is installing', async () => {
    const state = new SidebarState(
      api({
        makeRunnable: jest
          .fn()
          .mockRejectedValue(new APIError(409, '/x: no bin/python')),
        environments: jest.fn()
      })
    );
    await state.install('aaaaaaaaaaaa');
    expect(state.actionError).toBe('/x: no bin/python');
    expect(state.installing.has('aaaaaaaaaaaa')).toBe(false);
  });
});
