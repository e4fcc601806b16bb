/**
 * The left-sidebar panel: one widget, one <section> per shown section (Session, Data access,
 * Environments, Dask). It polls the server only while it is visible (with backoff after
 * failures), re-renders a section only when its data changed (so keyboard focus stays put),
 * and updates the token countdown in place once a second.
 */
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import type { IKernelInfo } from './api';
import {
  environmentRows,
  formatDuration,
  remaining,
  tokenView,
  type SectionId
} from './model';
import { settleAll, type SidebarState } from './state';
import { h, renderEnvironments, renderSession, renderToken } from './views';

export const SECTION_TITLES: Record<SectionId, string> = {
  session: 'Session',
  token: 'Data access',
  environments: 'Environments',
  dask: 'Dask'
};

/** A section the panel does not render itself (the Dask section). */
export interface IExternalSection {
  /** the section body; the panel adds the heading */
  node: HTMLElement;
  /** called on each panel poll while visible; rejects on failure (for backoff) */
  refresh(): Promise<void>;
}

export interface IPanelOptions {
  state: SidebarState;
  sections: SectionId[];
  pollInterval: number; // seconds
  warnAt: number; // seconds
  openKernel: (kernel: IKernelInfo, what: 'notebook' | 'console') => void;
  external?: Partial<Record<SectionId, IExternalSection>>;
}

export class SidebarPanel extends Widget {
  constructor(private _opts: IPanelOptions) {
    super();
    this.id = 'afhub-sidebar';
    this.addClass('afhub-panel');
    this.title.caption = 'Analysis facility';
    this.node.setAttribute('role', 'region');
    this.node.setAttribute('aria-label', 'Analysis facility');
    this._build();
    _opts.state.changed.connect((_, what) => this._render(what), this);
    this._poll = new Poll({
      name: 'afhub-sidebar:panel',
      factory: () => this._fetch(),
      frequency: this._frequency(_opts.pollInterval),
      standby: () =>
        this.isHidden ||
        !this.isAttached ||
        document.visibilityState === 'hidden'
    });
  }

  get poll(): Poll {
    return this._poll;
  }

  configure(
    opts: Partial<Pick<IPanelOptions, 'sections' | 'pollInterval' | 'warnAt'>>
  ): void {
    Object.assign(this._opts, opts);
    if (opts.pollInterval !== undefined) {
      this._poll.frequency = this._frequency(opts.pollInterval);
    }
    if (opts.sections !== undefined) {
      this._build();
    }
  }

  /** Update the countdown text in place (called once a second while visible). */
  tick(): void {
    if (this.isHidden || !this._opts.state.token) {
      return;
    }
    const st = this._opts.state;
    const left = remaining(st.token!, st.tokenFetchedAt, st.clock());
    const view = tokenView(st.token, left, {
      warnAt: this._opts.warnAt,
      loggedOut: st.loggedOut
    });
    if (view.level !== this._tokenLevel) {
      this._render('token', true);
      return;
    }
    this.node.querySelectorAll('[data-countdown]').forEach(el => {
      el.textContent = left === null ? 'unknown' : formatDuration(left);
    });
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._poll.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    void this._poll.refresh();
  }

  private _frequency(seconds: number) {
    const interval = Math.max(2, seconds) * 1000;
    return { interval, backoff: true, max: interval * 10 };
  }

  private async _fetch(): Promise<void> {
    const { state, sections, external } = this._opts;
    const calls: Promise<void>[] = [state.fetchAll(sections)];
    for (const id of sections) {
      const ext = external?.[id];
      if (ext) {
        calls.push(ext.refresh());
      }
    }
    await settleAll(calls);
  }

  private _build(): void {
    this.node.replaceChildren();
    this._bodies = {};
    this._last = {};
    this.node.append(h('h2', { class: 'afhub-title' }, 'Analysis facility'));
    for (const id of this._opts.sections) {
      const headingId = `afhub-section-${id}`;
      const body = h('div', { class: 'afhub-section-slot' });
      const section = h(
        'section',
        {
          class: `afhub-section afhub-section-${id}`,
          'aria-labelledby': headingId,
          'data-section': id
        },
        h('h3', { id: headingId }, SECTION_TITLES[id]),
        body
      );
      this.node.append(section);
      this._bodies[id] = body;
      const ext = this._opts.external?.[id];
      if (ext) {
        body.append(ext.node);
      } else {
        this._render(id, true);
      }
    }
  }

  private _render(what: string, force = false): void {
    const id = (what === 'login' ? 'token' : what) as SectionId;
    const slot = this._bodies[id];
    if (!slot || this._opts.external?.[id]) {
      if (what === 'login') {
        this._render('token', true);
      }
      return;
    }
    const st = this._opts.state;
    const now = st.clock();
    let node: HTMLElement;
    let key: string;
    switch (id) {
      case 'session':
        key = JSON.stringify([st.session, st.sessionError]);
        node = renderSession(st.session, st.sessionError);
        break;
      case 'token': {
        const left = st.token
          ? remaining(st.token, st.tokenFetchedAt, now)
          : null;
        const view = tokenView(st.token, left, {
          warnAt: this._opts.warnAt,
          loggedOut: st.loggedOut
        });
        this._tokenLevel = view.level;
        key = JSON.stringify([
          st.token,
          st.tokenError,
          st.renewing,
          view.level,
          st.loggedOut,
          Math.floor(now / 30),
          st.data,
          st.dataError,
          st.accessTests,
          [...st.accessTesting]
        ]);
        node = renderToken({
          status: st.token,
          view,
          left,
          now,
          error: st.tokenError,
          renewing: st.renewing,
          loginUrl: st.session?.hub_login_url ?? null,
          onRenew: () => void st.renewToken().catch(() => undefined),
          storage: {
            data: st.data,
            tests: st.accessTests,
            testing: st.accessTesting,
            error: st.dataError,
            onTest: name => void st.testAccess(name)
          }
        });
        break;
      }
      case 'environments': {
        const list = st.environments;
        key = JSON.stringify([
          list,
          st.environmentsError,
          st.actionError,
          [...st.installing]
        ]);
        node = renderEnvironments({
          rows: list ? environmentRows(list, now) : [],
          enabled: list ? list.enabled : true,
          skipped: list ? list.skipped.length : 0,
          error: st.environmentsError,
          actionError: st.actionError,
          installing: st.installing,
          onOpen: this._opts.openKernel,
          onInstall: id => void st.install(id)
        });
        break;
      }
      default:
        return;
    }
    if (!force && this._last[id] === key) {
      return;
    }
    this._last[id] = key;
    const hadFocus = slot.contains(document.activeElement);
    const focusLabel = hadFocus
      ? (document.activeElement as HTMLElement).getAttribute('aria-label')
      : null;
    slot.replaceChildren(node);
    if (focusLabel) {
      // keep keyboard focus on the same control after a re-render
      const again = Array.from(
        slot.querySelectorAll<HTMLElement>('[aria-label]')
      ).find(el => el.getAttribute('aria-label') === focusLabel);
      again?.focus();
    }
  }

  private _bodies: Partial<Record<SectionId, HTMLElement>> = {};
  private _last: Partial<Record<SectionId, string>> = {};
  private _tokenLevel: string | null = null;
  private _poll: Poll;
}
