/**
 * Dask plots as main-area panes: the plot URLs through the owner's relay, what a check of the
 * cluster means for the pane (tables), the pane widget in jsdom (iframe kept across checks,
 * dropped with a message once the cluster stopped, gone on close) and the sidebar's plot
 * buttons (there for running clusters only, working after a re-render).
 */
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import {
  DASHBOARD_PLOTS,
  DashboardPane,
  findPlot,
  nextView,
  observe,
  paneId,
  plotUrl,
  type PaneView
} from '../dashboards';
import { DaskSection, type IDaskCluster } from '../dask';
import { APIError } from '../request';

const NAME = 'afhub.0123456789abcdef0123';

function cluster(over: Partial<IDaskCluster> = {}): IDaskCluster {
  return {
    name: NAME,
    status: 'running',
    workers: 1,
    requested: 1,
    adapt: null,
    dashboard_link: `/user/alice/afhub/dask/clusters/${NAME}/status`,
    options: {},
    start_time: 100,
    ...over
  };
}

const taskStream = findPlot('task-stream')!;

describe('DASHBOARD_PLOTS', () => {
  it("are distributed's individual pages", () => {
    expect(DASHBOARD_PLOTS.map(p => [p.id, p.path])).toEqual([
      ['task-stream', 'individual-task-stream'],
      ['progress', 'individual-progress'],
      ['workers-memory', 'individual-workers-memory']
    ]);
    expect(findPlot('status')).toBeNull();
  });
});

describe('plotUrl', () => {
  it.each<[string, string]>([
    // the relay through the owner's server (the link the server lists)
    [
      `/user/alice/afhub/dask/clusters/${NAME}/status`,
      `/user/alice/afhub/dask/clusters/${NAME}/individual-task-stream`
    ],
    [
      'http://127.0.0.1:8000/user/jo%40cern/afhub/dask/clusters/c1/status/',
      'http://127.0.0.1:8000/user/jo%40cern/afhub/dask/clusters/c1/individual-task-stream'
    ],
    // where the gateway serves dashboards itself (Kubernetes)
    [
      'https://hub.example/services/dask-gateway/clusters/c1/status?x=1',
      'https://hub.example/services/dask-gateway/clusters/c1/individual-task-stream'
    ],
    // a bare dashboard root
    ['http://127.0.0.1:8787/', 'http://127.0.0.1:8787/individual-task-stream']
  ])('%p', (link, url) => {
    expect(plotUrl(link, taskStream)).toBe(url);
  });

  it('one pane per cluster and plot', () => {
    expect(paneId(NAME, 'progress')).toBe(`afhub-dask-plot:${NAME}:progress`);
    expect(paneId(NAME, 'progress')).not.toBe(paneId(NAME, 'task-stream'));
  });
});

describe('observe', () => {
  const gone = expect.objectContaining({
    kind: 'gone',
    text: expect.stringMatching(/^Cluster 0123456789ab has stopped/)
  });
  it.each<[string, Parameters<typeof observe>[2], unknown]>([
    [
      'running',
      { model: cluster() },
      {
        kind: 'live',
        url: `/user/alice/afhub/dask/clusters/${NAME}/individual-task-stream`
      }
    ],
    [
      'pending',
      { model: cluster({ status: 'pending', dashboard_link: null }) },
      {
        kind: 'waiting',
        text: 'Cluster 0123456789ab is starting; the task stream shows once it runs.'
      }
    ],
    ['stopping', { model: cluster({ status: 'stopping' }) }, gone],
    ['stopped', { model: cluster({ status: 'stopped' }) }, gone],
    ['failed', { model: cluster({ status: 'failed' }) }, gone],
    ['404', { status: 404, message: 'no cluster of yours by that name' }, gone],
    [
      'no bokeh',
      { model: cluster({ dashboard_link: null }) },
      expect.objectContaining({
        kind: 'gone',
        text: expect.stringContaining('serves no dashboard')
      })
    ],
    [
      'gateway down',
      {
        status: 502,
        message: 'Dask Gateway is unreachable; try again in a moment'
      },
      {
        kind: 'error',
        text: 'Cannot check cluster 0123456789ab: Dask Gateway is unreachable; try again in a moment'
      }
    ]
  ])('%s', (_, answer, view) => {
    expect(observe(NAME, taskStream, answer)).toEqual(view);
  });
});

describe('nextView', () => {
  const live: PaneView = { kind: 'live', url: '/x/individual-progress' };
  const gone: PaneView = { kind: 'gone', text: 'stopped' };
  const error: PaneView = { kind: 'error', text: 'unreachable' };
  const waiting: PaneView = { kind: 'waiting', text: 'starting' };
  it.each<[PaneView | null, PaneView, PaneView]>([
    [null, live, live],
    [null, error, error],
    [waiting, live, live],
    [error, live, live],
    [live, error, live], // a failed check does not blank a working plot
    [live, gone, gone],
    [gone, live, gone] // final
  ])('%p then %p', (current, seen, out) => {
    expect(nextView(current, seen)).toEqual(out);
  });
});

describe('DashboardPane', () => {
  function pane(answers: (IDaskCluster | APIError)[]) {
    const fetchCluster = jest.fn(async (name: string) => {
      expect(name).toBe(NAME);
      const a = answers.length > 1 ? answers.shift()! : answers[0];
      if (a instanceof APIError) {
        throw a;
      }
      return a;
    });
    const w = new DashboardPane({
      cluster: NAME,
      plot: taskStream,
      fetchCluster,
      interval: 0
    });
    return { w, fetchCluster };
  }

  it('shows the plot through the relay and keeps the same iframe across checks', async () => {
    const { w } = pane([
      cluster(),
      new APIError(502, 'Dask Gateway is unreachable'),
      cluster()
    ]);
    expect(w.title.label).toBe('Task stream · 0123456789ab');
    expect(w.title.closable).toBe(true);
    await w.check();
    const frame = w.iframe!;
    expect(frame.getAttribute('src')).toBe(
      `/user/alice/afhub/dask/clusters/${NAME}/individual-task-stream`
    );
    expect(frame.getAttribute('sandbox')).toBe(
      'allow-scripts allow-same-origin'
    );
    await w.check(); // the gateway hiccups
    await w.check();
    expect(w.iframe).toBe(frame);
    expect(w.node.querySelectorAll('iframe')).toHaveLength(1);
    expect(w.node.dataset.view).toBe('live');
    expect(w.node.querySelector('[role=status]')!.textContent).toBe('');
    w.dispose();
  });

  it('drops the plot and says so once the cluster stopped, then stops asking', async () => {
    const { w, fetchCluster } = pane([
      cluster(),
      new APIError(404, 'no cluster of yours by that name')
    ]);
    Widget.attach(w, document.body);
    await new Promise(resolve => setTimeout(resolve, 0)); // the check on attach
    const frame = w.iframe!;
    expect(frame.isConnected).toBe(true);
    await w.check();
    expect(w.iframe).toBeNull();
    expect(frame.isConnected).toBe(false);
    expect(frame.getAttribute('src')).toBe('about:blank');
    expect(w.node.dataset.view).toBe('gone');
    expect(w.node.querySelector('[role=status]')!.textContent).toMatch(
      /^Cluster 0123456789ab has stopped: its task stream is gone/
    );
    const calls = fetchCluster.mock.calls.length;
    await w.check();
    expect(fetchCluster.mock.calls.length).toBe(calls);
    w.dispose();
  });

  it('waits for a starting cluster, then shows the plot', async () => {
    const { w } = pane([
      cluster({ status: 'pending', dashboard_link: null }),
      cluster()
    ]);
    await w.check();
    expect(w.iframe).toBeNull();
    expect(w.node.textContent).toContain('is starting');
    await w.check();
    expect(w.iframe).not.toBeNull();
    w.dispose();
  });

  it('closes cleanly: no iframe left behind', async () => {
    const { w } = pane([cluster()]);
    Widget.attach(w, document.body);
    await w.check();
    const frame = w.iframe!;
    w.close();
    w.dispose();
    expect(frame.isConnected).toBe(false);
    expect(frame.getAttribute('src')).toBe('about:blank');
    expect(document.querySelector('.afhub-dashboard-pane')).toBeNull();
    await w.check(); // a late poll after close does nothing
  });
});

describe('DaskSection plot buttons', () => {
  let list: IDaskCluster[] = [];
  beforeEach(() => {
    jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockImplementation(async (url: string) => {
        const body = url.endsWith('dask/clusters')
          ? { enabled: true, clusters: list }
          : { fields: [], limits: { max_workers: 4, max_clusters: 2 } };
        return {
          ok: true,
          status: 200,
          text: async () => JSON.stringify(body)
        } as unknown as Response;
      });
  });
  afterEach(() => jest.restoreAllMocks());

  const settings = { baseUrl: '/user/alice/' } as ServerConnection.ISettings;

  it('offers each plot of a running cluster and opens it, also after a re-render', async () => {
    const openPlot = jest.fn();
    const section = new DaskSection(settings, () => 200, openPlot);
    document.body.append(section.node);
    list = [cluster(), cluster({ name: 'afhub.ffff', status: 'pending' })];
    await section.refresh();
    const group = section.node.querySelector(
      '[aria-label="Plots of cluster 0123456789ab"]'
    )!;
    expect(
      Array.from(group.querySelectorAll('button')).map(b => b.textContent)
    ).toEqual(['Task stream', 'Progress', 'Worker memory']);
    // only the running cluster has plots
    expect(section.node.querySelectorAll('.afhub-plots')).toHaveLength(1);
    list = [cluster({ workers: 2, requested: 2 })]; // new data: the list is rendered again
    await section.refresh();
    const button = section.node.querySelector<HTMLButtonElement>(
      '[aria-label="Open Task stream of cluster 0123456789ab"]'
    )!;
    expect(button.isConnected).toBe(true);
    button.click();
    section.node
      .querySelector<HTMLButtonElement>(
        '[aria-label="Open Worker memory of cluster 0123456789ab"]'
      )!
      .click();
    section.node.remove();
    expect(openPlot.mock.calls).toEqual([
      [NAME, 'task-stream'],
      [NAME, 'workers-memory']
    ]);
  });

  it('offers no plots without a way to open them', async () => {
    const section = new DaskSection(settings, () => 200);
    list = [cluster()];
    await section.refresh();
    expect(section.node.querySelector('[data-cluster]')).not.toBeNull();
    expect(section.node.querySelector('.afhub-plots')).toBeNull();
  });
});
