/**
 * The data-access section's storage endpoints and their "test access" action: the view from
 * plain data, and the state calling `POST afhub/api/data/test` per endpoint.
 */
import type { AfhubAPI, IAccessTest, IDataAccess } from '../api';
import { APIError } from '../request';
import { SidebarState } from '../state';
import { ACCESS_REASON_TITLES, renderStorage } from '../views';

const DATA: IDataAccess = {
  enabled: true,
  endpoints: [
    { name: 'cache', url: 'root://127.0.0.1:1095' },
    { name: 'origin', url: 'root://127.0.0.1:1094' }
  ],
  audience: 'afhub-storage',
  test_path: '/public/samples/uproot-HZZ.root'
};

function result(over: Partial<IAccessTest> = {}): IAccessTest {
  return {
    endpoint: 'cache',
    url: 'root://127.0.0.1:1095//public/samples/uproot-HZZ.root',
    path: '/public/samples/uproot-HZZ.root',
    ok: true,
    reason: 'ok',
    message:
      'read the first bytes of /public/samples/uproot-HZZ.root with your current token',
    server_message: '',
    seconds: 0.2,
    checked_at: 1000,
    ...over
  };
}

function props(over = {}) {
  return {
    data: DATA,
    tests: {},
    testing: new Set<string>(),
    error: null,
    onTest: jest.fn(),
    ...over
  };
}

describe('renderStorage', () => {
  it('lists each endpoint with a labelled test button', () => {
    const p = props();
    const el = renderStorage(p)!;
    const rows = el.querySelectorAll('li[data-endpoint]');
    expect(Array.from(rows).map(r => r.getAttribute('data-endpoint'))).toEqual([
      'cache',
      'origin'
    ]);
    expect(el.textContent).toContain('root://127.0.0.1:1095');
    expect(el.textContent).toContain(
      'Test opens /public/samples/uproot-HZZ.root'
    );
    const b = el.querySelector<HTMLButtonElement>(
      '[aria-label="Test access to origin"]'
    )!;
    b.click();
    expect(p.onTest).toHaveBeenCalledWith('origin');
  });

  it.each([
    ['ok', true],
    ['expired', false],
    ['wrong_audience', false],
    ['not_in_scope', false],
    ['server_down', false]
  ] as [IAccessTest['reason'], boolean][])(
    'shows the reason %s',
    (reason, ok) => {
      const t = result({
        ok,
        reason,
        message: 'why',
        server_message: '[3010] permission denied'
      });
      const el = renderStorage(props({ tests: { cache: t } }))!;
      const line = el.querySelector('[data-endpoint="cache"] [data-reason]')!;
      expect(line.getAttribute('data-reason')).toBe(reason);
      expect(line.textContent).toBe(`${ACCESS_REASON_TITLES[reason]}: why`);
      expect(line.getAttribute('title')).toBe('[3010] permission denied');
      expect(line.className).toContain(
        ok ? 'afhub-level-ok' : 'afhub-level-error'
      );
      expect(
        el.querySelector('[data-endpoint="origin"] [data-reason]')
      ).toBeNull();
    }
  );

  it('disables the button of an endpoint being tested', () => {
    const el = renderStorage(props({ testing: new Set(['cache']) }))!;
    const b = el.querySelector<HTMLButtonElement>(
      '[aria-label="Test access to cache"]'
    )!;
    expect(b.disabled).toBe(true);
    expect(b.textContent).toBe('Testing…');
  });

  it('shows nothing without storage, but an error if there is one', () => {
    expect(
      renderStorage(props({ data: { ...DATA, enabled: false, endpoints: [] } }))
    ).toBeNull();
    const el = renderStorage(props({ data: null, error: 'boom' }))!;
    expect(el.textContent).toBe('Cannot test access: boom');
  });
});

describe('SidebarState.testAccess', () => {
  function api(over: Partial<Record<keyof AfhubAPI, jest.Mock>>): AfhubAPI {
    return over as unknown as AfhubAPI;
  }

  it('keeps the outcome per endpoint and emits token changes', async () => {
    const testAccess = jest.fn(async (endpoint: string) =>
      result({
        endpoint,
        ok: endpoint === 'cache',
        reason: endpoint === 'cache' ? 'ok' : 'server_down'
      })
    );
    const st = new SidebarState(
      api({ testAccess, data: jest.fn(async () => DATA) })
    );
    const seen: string[] = [];
    st.changed.connect((_, what) => seen.push(what));
    await st.fetchData();
    expect(st.data).toEqual(DATA);
    const running = st.testAccess('cache');
    expect(st.accessTesting.has('cache')).toBe(true);
    await running;
    await st.testAccess('origin');
    expect(testAccess.mock.calls.map(c => c[0])).toEqual(['cache', 'origin']);
    expect(st.accessTests.cache.reason).toBe('ok');
    expect(st.accessTests.origin.reason).toBe('server_down');
    expect(st.accessTesting.size).toBe(0);
    expect(seen.every(w => w === 'token')).toBe(true);
  });

  it('records a refused request as the section error', async () => {
    const testAccess = jest.fn(async () => {
      throw new APIError(
        400,
        "endpoint: unknown endpoint 'x'; endpoints: cache"
      );
    });
    const st = new SidebarState(api({ testAccess }));
    await st.testAccess('x');
    expect(st.dataError).toContain("unknown endpoint 'x'");
    expect(st.accessTests).toEqual({});
  });
});
