/**
 * afhub-sidebar: one left-sidebar panel (Session, Data access, Environments, Dask) and a
 * status-bar item (profile and token state). Talks only to the afhub server extension's REST
 * API under `{baseUrl}afhub/api/`. Settings: `schema/plugin.json`.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { WidgetTracker } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';

import iconSvg from '../style/icons/afhub.svg';
import { AfhubAPI, type IKernelInfo } from './api';
import { DashboardPane, findPlot, paneId } from './dashboards';
import { DaskSection, fetchCluster } from './dask';
import { shownSections } from './model';
import { SidebarPanel } from './panel';
import { SidebarState } from './state';
import { TokenStatusItem } from './status';

export const PLUGIN_ID = 'afhub-sidebar:plugin';
/** Open one individual plot of a cluster as a pane: args `{cluster, plot}` (`DASHBOARD_PLOTS` ids). */
export const OPEN_PLOT_COMMAND = 'afhub-sidebar:open-dask-plot';
export const afhubIcon = new LabIcon({
  name: 'afhub-sidebar:icon',
  svgstr: iconSvg
});

export interface ISettingsValues {
  pollInterval: number;
  environmentWatchInterval: number;
  sections: string[];
  statusBar: boolean;
  expiringWarning: number;
}

const DEFAULTS: ISettingsValues = {
  pollInterval: 10,
  environmentWatchInterval: 2,
  sections: ['session', 'token', 'environments', 'dask'],
  statusBar: true,
  expiringWarning: 120
};

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Analysis facility sidebar: session, data-access token, environments, Dask clusters.',
  autoStart: true,
  optional: [ILabShell, ISettingRegistry, IStatusBar, ILayoutRestorer],
  activate: async (
    app: JupyterFrontEnd,
    labShell: ILabShell | null,
    registry: ISettingRegistry | null,
    statusBar: IStatusBar | null,
    restorer: ILayoutRestorer | null
  ) => {
    const settings = registry
      ? await registry.load(PLUGIN_ID).catch(() => null)
      : null;
    const read = (): ISettingsValues => ({
      ...DEFAULTS,
      ...((settings?.composite ?? {}) as Partial<ISettingsValues>)
    });
    let values = read();
    const api = new AfhubAPI(app.serviceManager.serverSettings);
    const state = new SidebarState(api);

    const openKernel = (kernel: IKernelInfo, what: 'notebook' | 'console') => {
      if (what === 'notebook') {
        void app.commands.execute('notebook:create-new', {
          kernelName: kernel.name
        });
      } else {
        void app.commands.execute('console:create', {
          kernelPreference: { name: kernel.name }
        });
      }
    };
    // the clusters' plots as main-area panes: one per cluster and plot, reopened after a
    // reload (a stopped cluster's pane then says so)
    const panes = new WidgetTracker<DashboardPane>({
      namespace: 'afhub-dask-plot'
    });
    app.commands.addCommand(OPEN_PLOT_COMMAND, {
      label: args => {
        const plot = findPlot(String(args.plot ?? ''));
        return plot ? `Dask ${plot.title}` : 'Dask plot';
      },
      execute: async args => {
        const cluster = String(args.cluster ?? '');
        const plot = findPlot(String(args.plot ?? ''));
        if (!cluster || !plot) {
          throw new Error(`no such Dask plot: ${JSON.stringify(args)}`);
        }
        const open = panes.find(w => w.id === paneId(cluster, plot.id));
        if (open) {
          app.shell.activateById(open.id);
          return open;
        }
        const pane = new DashboardPane({
          cluster,
          plot,
          fetchCluster: name => fetchCluster(name, api.settings)
        });
        await panes.add(pane);
        app.shell.add(pane, 'main', { mode: 'split-right' });
        app.shell.activateById(pane.id);
        return pane;
      }
    });
    if (restorer) {
      void restorer.restore(panes, {
        command: OPEN_PLOT_COMMAND,
        args: pane => ({ cluster: pane.cluster, plot: pane.plot.id }),
        name: pane => `${pane.cluster}:${pane.plot.id}`
      });
    }
    const dask = new DaskSection(
      api.settings,
      undefined,
      (cluster, plot) =>
        void app.commands.execute(OPEN_PLOT_COMMAND, { cluster, plot })
    );
    const panel = new SidebarPanel({
      state,
      sections: shownSections(values.sections),
      pollInterval: values.pollInterval,
      warnAt: values.expiringWarning,
      openKernel,
      external: { dask }
    });
    panel.title.icon = afhubIcon;
    app.shell.add(panel, 'left', { rank: 850 });

    // a new environment's kernel reaches the Launcher within seconds, panel open or not
    const specs = app.serviceManager.kernelspecs;
    state.kernelsChanged.connect(() => void specs.refreshSpecs());
    let checkedSpecs = false;
    const watch = new Poll({
      name: 'afhub-sidebar:environments',
      factory: async () => {
        await state.fetchEnvironments();
        if (!checkedSpecs && state.environments) {
          // first answer: Lab may have listed kernel specs before an environment appeared
          checkedSpecs = true;
          await specs.ready;
          const known = new Set(Object.keys(specs.specs?.kernelspecs ?? {}));
          const missing = state.environments.environments.some(e =>
            e.kernels.some(k => !known.has(k.name))
          );
          if (missing) {
            await specs.refreshSpecs();
          }
        }
      },
      frequency: watchFrequency(values.environmentWatchInterval),
      standby: () =>
        values.environmentWatchInterval > 0 ? 'when-hidden' : true
    });

    let status: TokenStatusItem | null = null;
    if (statusBar) {
      status = new TokenStatusItem(state, {
        warnAt: values.expiringWarning,
        interval: 30,
        onOpen: () => app.shell.activateById(panel.id)
      });
      statusBar.registerStatusItem(PLUGIN_ID, {
        item: status,
        align: 'left',
        rank: 50,
        isActive: () => values.statusBar
      });
      void state.fetchSession().catch(() => undefined);
    }

    // one clock for the countdowns
    window.setInterval(() => {
      panel.tick();
      status?.update();
    }, 1000);

    settings?.changed.connect(() => {
      values = read();
      panel.configure({
        sections: shownSections(values.sections),
        pollInterval: values.pollInterval,
        warnAt: values.expiringWarning
      });
      watch.frequency = watchFrequency(values.environmentWatchInterval);
      status?.configure({ warnAt: values.expiringWarning });
      if (status) {
        status.setHidden(!values.statusBar);
      }
    });
    void labShell; // the panel is found through app.shell
  }
};

function watchFrequency(seconds: number) {
  const interval = Math.max(1, seconds || 60) * 1000;
  return { interval, backoff: true, max: Math.max(interval * 10, 60000) };
}

export default plugin;
