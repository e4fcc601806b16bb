/**
 * Dask section logic: option parsing against the facility's fields, worker counts, summaries,
 * and the new-cluster form's own-environment choice (in jsdom, over a mocked server).
 */
import { ServerConnection } from '@jupyterlab/services';

import {
  checkWorkers,
  clusterSummary,
  DaskSection,
  imageApplies,
  optionValues,
  shortName,
  type IDaskCluster,
  type IDaskField,
  type IDaskOptions
} from '../dask';

const fields: IDaskField[] = [
  {
    name: 'worker_cores',
    label: 'Worker cores',
    type: 'int',
    default: 1,
    min: 1,
    max: 4
  },
  {
    name: 'worker_memory',
    label: 'Worker memory (GiB)',
    type: 'float',
    default: 2,
    min: 0.5,
    max: 8
  },
  {
    name: 'image',
    label: 'Image',
    type: 'select',
    default: 'a',
    choices: [
      { value: 'a', label: 'A' },
      { value: 'b', label: 'B' }
    ]
  }
];

describe('optionValues', () => {
  it.each<[Record<string, string>, unknown]>([
    [{}, { values: { worker_cores: 1, worker_memory: 2, image: 'a' } }],
    [
      { worker_cores: '4', worker_memory: '1.5', image: 'b' },
      { values: { worker_cores: 4, worker_memory: 1.5, image: 'b' } }
    ],
    [{ worker_cores: '8' }, { error: 'Worker cores: must be <= 4, got 8' }],
    [
      { worker_cores: '1.5' },
      { error: 'Worker cores: a whole number is needed, got 1.5' }
    ],
    [
      { worker_memory: 'lots' },
      { error: "Worker memory (GiB): a number is needed, got 'lots'" }
    ],
    [
      { worker_memory: '0.1' },
      { error: 'Worker memory (GiB): must be >= 0.5, got 0.1' }
    ],
    [{ image: 'c' }, { error: 'Image: choose one of a, b' }]
  ])('%p', (raw, out) => {
    expect(optionValues(fields, raw)).toEqual(out);
  });
});

describe('checkWorkers', () => {
  it.each<[string, number | null, number | string]>([
    ['1', 10, 1],
    [' 0 ', 10, 0],
    ['11', 10, 'Workers: at most 10 on this facility, got 11'],
    ['-1', null, "Workers: a whole number >= 0 is needed, got '-1'"],
    ['', null, "Workers: a whole number >= 0 is needed, got ''"],
    ['500', null, 500]
  ])('%p max %p', (text, max, out) => {
    expect(checkWorkers(text, max)).toEqual(out);
  });
});

describe('clusterSummary', () => {
  const c: IDaskCluster = {
    name: 'afhub.0123456789abcdef0123',
    status: 'running',
    workers: 1,
    requested: 1,
    adapt: null,
    dashboard_link: null,
    options: {},
    start_time: 100
  };
  it.each<[Partial<IDaskCluster>, string]>([
    [{}, 'running · 1 worker · up 1m 00s'],
    [{ workers: 2, requested: 3, start_time: null }, 'running · 2/3 workers'],
    [
      {
        status: 'pending',
        workers: 0,
        requested: 0,
        adapt: { minimum: 1, maximum: 5 },
        start_time: null
      },
      'pending · 0 workers · adaptive 1–5'
    ]
  ])('%p', (over, text) => {
    expect(clusterSummary({ ...c, ...over }, 160)).toBe(text);
  });

  it('shortens gateway names', () => {
    expect(shortName(c.name)).toBe('0123456789ab');
    expect(shortName('local')).toBe('local');
  });
});

const VENV = '/home/alice/envs/agcextra';

describe('imageApplies', () => {
  it.each<[Record<string, string>, boolean]>([
    [{}, true],
    [{ environment: '' }, true],
    [{ environment: VENV, image: 'a' }, false]
  ])('%p', (raw, out) => {
    expect(imageApplies(raw)).toBe(out);
  });
});

describe('the new-cluster form with own environments', () => {
  const options: IDaskOptions = {
    fields: [
      fields[0],
      {
        name: 'environment',
        label: 'Environment',
        type: 'select',
        default: '',
        choices: [
          { value: '', label: "The facility's image" },
          { value: VENV, label: `agcextra (${VENV})` }
        ]
      },
      fields[2]
    ],
    limits: { max_workers: 4, max_clusters: 2 }
  };
  let posted: unknown[] = [];
  let refusal: string | null = null;
  beforeEach(() => {
    posted = [];
    refusal = null;
    jest
      .spyOn(ServerConnection, 'makeRequest')
      .mockImplementation(async (url: string, init: RequestInit) => {
        let status = 200;
        let body: unknown = url.endsWith('dask/options')
          ? options
          : { enabled: true, clusters: [] };
        if (init.method === 'POST') {
          posted.push(JSON.parse(String(init.body)));
          [status, body] = refusal ? [400, { message: refusal }] : [201, {}];
        }
        return {
          ok: status < 400,
          status,
          text: async () => JSON.stringify(body)
        } as unknown as Response;
      });
  });
  afterEach(() => jest.restoreAllMocks());

  async function form() {
    const section = new DaskSection({
      baseUrl: '/user/alice/'
    } as ServerConnection.ISettings);
    await section.refresh();
    const q = <T extends Element>(sel: string) =>
      section.node.querySelector<T>(sel)!;
    const env = q<HTMLSelectElement>('#afhub-dask-opt-environment');
    const image = q<HTMLSelectElement>('#afhub-dask-opt-image');
    const submit = () =>
      q<HTMLFormElement>('form.afhub-dask-create').dispatchEvent(
        new Event('submit', { cancelable: true })
      );
    return { section, env, image, submit };
  }
  const settle = () => new Promise(resolve => setTimeout(resolve, 20));

  it('offers the environments, and an own one disables the image', async () => {
    const { env, image, submit } = await form();
    expect(Array.from(env.options).map(o => o.textContent)).toEqual([
      "The facility's image",
      `agcextra (${VENV})`
    ]);
    expect(env.value).toBe('');
    expect(image.disabled).toBe(false);
    env.value = VENV;
    env.dispatchEvent(new Event('change'));
    expect(image.disabled).toBe(true);
    submit();
    await settle();
    expect(posted).toEqual([
      {
        options: { worker_cores: 1, environment: VENV, image: 'a' },
        workers: 1
      }
    ]);
    env.value = '';
    env.dispatchEvent(new Event('change'));
    expect(image.disabled).toBe(false);
  });

  it("shows the gateway's refusal", async () => {
    refusal = `environment: ${VENV} cannot run Dask workers: install distributed`;
    const { section, env, submit } = await form();
    env.value = VENV;
    env.dispatchEvent(new Event('change'));
    submit();
    await settle();
    expect(section.node.querySelector('[role="alert"]')!.textContent).toBe(
      refusal
    );
  });
});
