/** Dask section logic: option parsing against the facility's fields, worker counts, summaries. */
import {
  checkWorkers,
  clusterSummary,
  optionValues,
  shortName,
  type IDaskCluster,
  type IDaskField
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
