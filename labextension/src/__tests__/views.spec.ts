/**
 * Sections rendered into jsdom: what a user sees and can press, and what never shows.
 */
import type { ITokenStatus } from '../api';
import { environmentRows, tokenView } from '../model';
import { renderEnvironments, renderSession, renderToken } from '../views';
import { env, session, token } from './fixtures';

function tokenSection(
  status: ITokenStatus | null,
  over: Partial<Parameters<typeof renderToken>[0]> = {}
) {
  const onRenew = jest.fn();
  const left = status?.expires_in ?? null;
  const el = renderToken({
    status,
    view: tokenView(status, left, { warnAt: 120 }),
    left,
    now: 1030,
    error: null,
    renewing: false,
    loginUrl: '/hub/login?next=/user/carol/',
    onRenew,
    ...over
  });
  return { el, onRenew };
}

describe('Data access section', () => {
  it('shows audience, countdown and last refresh; the button renews', () => {
    const { el, onRenew } = tokenSection(token({ expires_in: 600 }));
    expect(el.querySelector('[data-countdown]')!.textContent).toBe('10m 00s');
    expect(el.textContent).toContain('https://wlcg.cern.ch/jwt/v1/any');
    expect(el.textContent).toContain('30s ago');
    const button = el.querySelector('button')!;
    expect(button.getAttribute('aria-label')).toBe(
      'Refresh the data-access token now'
    );
    button.click();
    expect(onRenew).toHaveBeenCalledTimes(1);
    expect(el.querySelector('a.afhub-login')).toBeNull();
  });

  it('offers the hub login when renewal stopped', () => {
    const { el } = tokenSection(token({ state: 'login_required' }));
    const link = el.querySelector('a.afhub-login') as HTMLAnchorElement;
    expect(link.getAttribute('href')).toBe('/hub/login?next=/user/carol/');
    expect(el.querySelector('.afhub-state')!.textContent).toContain(
      'log in to the hub again'
    );
  });

  it('shows the last error and request errors', () => {
    const { el } = tokenSection(
      token({ state: 'refresh_failing', last_error: 'hub answered 502' }),
      {
        error: 'server unreachable'
      }
    );
    expect(el.textContent).toContain('hub answered 502');
    expect(el.querySelector('[role=alert]')!.textContent).toBe(
      'Cannot read the token status: server unreachable'
    );
  });

  it('disables the button while renewing and has no button when delivery is off', () => {
    expect(
      tokenSection(token(), { renewing: true }).el.querySelector('button')!
        .disabled
    ).toBe(true);
    expect(
      tokenSection(token({ state: 'disabled' })).el.querySelector('button')
    ).toBeNull();
  });
});

describe('Session section', () => {
  it('lists profile, image and GPUs', () => {
    const el = renderSession(session(), null);
    const dts = Array.from(el.querySelectorAll('dt')).map(d => d.textContent);
    expect(dts).toEqual([
      'Profile',
      'Image',
      'Architecture',
      'CPU',
      'Memory',
      'GPUs',
      'User'
    ]);
    expect(el.textContent).toContain('GPU (A100)');
  });

  it('says what failed', () => {
    const el = renderSession(null, '500 Internal Server Error');
    expect(el.querySelector('[role=alert]')!.textContent).toBe(
      'Cannot read the session: 500 Internal Server Error'
    );
  });
});

describe('Environments section', () => {
  const list = {
    enabled: true,
    skipped: [{ path: '/x', reason: 'unreadable' }],
    environments: [
      env(),
      env({
        id: 'ffffffffffff',
        name: 'bare',
        runnable: false,
        reason: 'no ipykernel',
        can_install_ipykernel: true,
        kernels: []
      })
    ]
  };

  function render(installing = new Set<string>()) {
    const onOpen = jest.fn();
    const onInstall = jest.fn();
    const el = renderEnvironments({
      rows: environmentRows(list, 0),
      enabled: true,
      skipped: 1,
      error: null,
      actionError: null,
      installing,
      onOpen,
      onInstall
    });
    return { el, onOpen, onInstall };
  }

  it('opens a notebook or console with a kernel', () => {
    const { el, onOpen } = render();
    const nb = el.querySelector(
      '[aria-label="New notebook with Python (physics)"]'
    ) as HTMLButtonElement;
    const con = el.querySelector(
      '[aria-label="New console with Python (physics)"]'
    ) as HTMLButtonElement;
    nb.click();
    con.click();
    expect(onOpen.mock.calls.map(c => [c[0].name, c[1]])).toEqual([
      ['physics', 'notebook'],
      ['physics', 'console']
    ]);
  });

  it('explains a not-runnable environment and offers the install', () => {
    const { el, onInstall } = render();
    const item = el.querySelector('[data-env-name=bare]')!;
    expect(item.textContent).toContain('not runnable: no ipykernel');
    (item.querySelector('button') as HTMLButtonElement).click();
    expect(onInstall).toHaveBeenCalledWith('ffffffffffff');
    expect(el.textContent).toContain('1 location(s) skipped');
  });

  it('disables the install while it runs', () => {
    const { el } = render(new Set(['ffffffffffff']));
    const b = el.querySelector(
      '[data-env-name=bare] button'
    ) as HTMLButtonElement;
    expect(b.disabled).toBe(true);
    expect(b.textContent).toBe('Installing…');
  });

  it("lists the facility's environment on a fresh account", () => {
    const facility = env({
      id: 'facility',
      name: 'analysis',
      kind: 'facility',
      prefix: '/opt/afhub/envs/analysis',
      kernels: [
        {
          name: 'python3',
          display_name: 'Python 3 (facility: analysis)',
          language: 'python',
          built: false,
          aliases: []
        }
      ]
    });
    const fresh = { enabled: true, skipped: [], environments: [], facility };
    const onOpen = jest.fn();
    const el = renderEnvironments({
      rows: environmentRows(fresh, 0),
      enabled: true,
      skipped: 0,
      error: null,
      actionError: null,
      installing: new Set<string>(),
      onOpen,
      onInstall: jest.fn()
    });
    expect(el.textContent).not.toContain('No environments found.');
    const row = el.querySelector('[data-env-name=analysis]')!;
    expect(row.textContent).toContain('facility environment');
    (
      row.querySelector(
        '[aria-label="New notebook with Python 3 (facility: analysis)"]'
      ) as HTMLButtonElement
    ).click();
    expect(onOpen).toHaveBeenCalledWith(facility.kernels[0], 'notebook');
  });
});
