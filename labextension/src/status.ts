/**
 * The status-bar item: `<profile> · token <state>`, always visible. Clicking it opens the
 * panel; when renewal has stopped (hub logout, refresh refused) it carries a link to the
 * hub's login page. It polls the token status itself (every `interval` s while the browser
 * tab is visible), since the panel may be closed.
 */
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { remaining, statusBarText, tokenView } from './model';
import type { SidebarState } from './state';
import { h } from './views';

export class TokenStatusItem extends Widget {
  constructor(
    private _state: SidebarState,
    private _opts: { warnAt: number; interval: number; onOpen: () => void }
  ) {
    super();
    this.addClass('afhub-status');
    this.node.title = 'Analysis facility: profile and data-access token';
    this._text = h('span', {
      class: 'afhub-status-text',
      role: 'button',
      tabindex: '0'
    });
    this._text.addEventListener('click', () => this._opts.onOpen());
    this._text.addEventListener('keydown', e => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        this._opts.onOpen();
      }
    });
    this._link = h(
      'a',
      { class: 'afhub-status-login', target: '_blank', rel: 'noopener' },
      'log in'
    ) as HTMLAnchorElement;
    this.node.append(this._text, this._link);
    _state.changed.connect(() => this.update(), this);
    this._poll = new Poll({
      name: 'afhub-sidebar:status',
      factory: () => _state.fetchToken(),
      frequency: {
        interval: _opts.interval * 1000,
        backoff: true,
        max: _opts.interval * 10000
      },
      standby: 'when-hidden'
    });
    this.update();
  }

  configure(opts: { warnAt?: number }): void {
    Object.assign(this._opts, opts);
    this.update();
  }

  dispose(): void {
    this._poll.dispose();
    super.dispose();
  }

  protected onUpdateRequest(): void {
    const st = this._state;
    const left = st.token
      ? remaining(st.token, st.tokenFetchedAt, st.clock())
      : null;
    const view = tokenView(st.token, left, {
      warnAt: this._opts.warnAt,
      loggedOut: st.loggedOut
    });
    const text = statusBarText(st.session, view);
    if (this._text.textContent !== text) {
      this._text.textContent = text;
    }
    this.node.dataset.level = view.level;
    this._text.setAttribute(
      'aria-label',
      `${text}. ${view.text} Open the analysis facility panel.`
    );
    const login = view.loginRequired ? st.session?.hub_login_url : null;
    this._link.hidden = !login;
    if (login) {
      this._link.href = login;
    }
  }

  private _text: HTMLElement;
  private _link: HTMLAnchorElement;
  private _poll: Poll;
}
