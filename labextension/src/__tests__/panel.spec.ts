/**
 * The panel widget in jsdom: it fetches when shown, stays quiet while hidden (the poll is on
 * standby), renders what it fetched, and keeps the countdown ticking in place.
 */
import { Widget } from '@lumino/widgets';

import type { AfhubAPI } from '../api';
import { SidebarPanel } from '../panel';
import { SidebarState } from '../state';
import { env, session, token } from './fixtures';

function setup() {
  let now = 1000;
  const calls: string[] = [];
  const api = {
    session: jest.fn(async () => (calls.push('session'), session())),
    token: jest.fn(
      async () => (calls.push('token'), token({ expires_in: 600 }))
    ),
    environments: jest.fn(
      async () => (
        calls.push('environments'),
        { enabled: true, skipped: [], environments: [env()] }
      )
    )
  } as unknown as AfhubAPI;
  const state = new SidebarState(api, () => now);
  const panel = new SidebarPanel({
    state,
    sections: ['session', 'token', 'environments'],
    pollInterval: 600,
    warnAt: 120,
    openKernel: jest.fn()
  });
  return { panel, calls, advance: (s: number) => (now += s) };
}

const settle = () => new Promise(resolve => setTimeout(resolve, 50));

describe('SidebarPanel', () => {
  it('polls nothing while hidden and fetches all sections when shown', async () => {
    const { panel, calls } = setup();
    panel.hide();
    Widget.attach(panel, document.body);
    await panel.poll.refresh();
    await settle();
    expect(calls).toEqual([]);
    panel.show();
    await settle();
    expect(calls.sort()).toEqual(['environments', 'session', 'token']);
    expect(
      panel.node.querySelector('[data-section="session"]')!.textContent
    ).toContain('GPU (A100)');
    expect(
      panel.node.querySelector('[data-env-name="physics"]')
    ).not.toBeNull();
    panel.dispose();
  });

  it('ticks the countdown without rebuilding the section', async () => {
    const { panel, advance } = setup();
    Widget.attach(panel, document.body);
    await settle();
    const countdown = panel.node.querySelector('[data-countdown]')!;
    expect(countdown.textContent).toBe('10m 00s');
    const button = panel.node.querySelector('[data-section="token"] button');
    advance(65);
    panel.tick();
    expect(countdown.textContent).toBe('8m 55s');
    expect(panel.node.querySelector('[data-section="token"] button')).toBe(
      button
    );
    panel.dispose();
  });

  it('has labelled sections for screen readers', () => {
    const { panel } = setup();
    const sections = Array.from(panel.node.querySelectorAll('section'));
    expect(
      sections.map(
        s =>
          panel.node.querySelector(`#${s.getAttribute('aria-labelledby')}`)!
            .textContent
      )
    ).toEqual(['Session', 'Data access', 'Environments']);
    panel.dispose();
  });
});
