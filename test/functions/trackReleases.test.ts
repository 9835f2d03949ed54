/**
 * The tracker timer's schedule. A `%NAME%` binding expression must resolve to an app setting or the host
 * refuses to index the function, so the schedule is resolved when the function is registered (worker
 * indexing runs with the app settings in the environment), with the documented default.
 */
import { parseSettings, SETTINGS } from '../../src/config';
import { registrations } from '../../dev/host';

const DEFAULT = SETTINGS.find((s) => s.name === 'TRACK_SCHEDULE')!.default;

/** Registers the timer with `TRACK_SCHEDULE` set to `value` (undefined: absent) and returns its schedule. */
function registeredSchedule(value: string | undefined): unknown {
  const saved = process.env.TRACK_SCHEDULE;
  if (value === undefined) delete process.env.TRACK_SCHEDULE;
  else process.env.TRACK_SCHEDULE = value;
  const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
  const error = jest.spyOn(console, 'error').mockImplementation(() => undefined);
  try {
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      require('../../src/functions/trackReleases');
    });
  } finally {
    if (saved === undefined) delete process.env.TRACK_SCHEDULE;
    else process.env.TRACK_SCHEDULE = saved;
    warn.mockRestore();
    error.mockRestore();
  }
  const timer = Object.values(registrations().get('trackReleases')!.bindings).find(
    (b) => b.direction === 'in',
  );
  expect(timer?.type).toBe('timerTrigger');
  return timer?.schedule;
}

describe('tracker schedule', () => {
  it('registers the documented default when TRACK_SCHEDULE is not set (no unresolvable %TRACK_SCHEDULE%)', () => {
    expect(DEFAULT).toBe('0 */1 * * * *');
    expect(registeredSchedule(undefined)).toBe(DEFAULT);
    expect(registeredSchedule('  ')).toBe(DEFAULT);
  });

  it('registers the setting when it is a valid six-field NCRONTAB expression', () => {
    expect(registeredSchedule('0 */5 * * * *')).toBe('0 */5 * * * *');
    expect(registeredSchedule(' 30 0-59/10 8-18 * * Mon-Fri ')).toBe('30 0-59/10 8-18 * * Mon-Fri');
  });

  it.each([
    ['five fields (classic cron)', '*/5 * * * *'],
    ['an out-of-range minute', '0 61 * * * *'],
    ['a binding expression', '%OTHER_SETTING%'],
    ['a TimeSpan (not on Consumption plans)', '00:05:00'],
    ['text', 'every minute'],
  ])('falls back to the default and reports a settings problem for %s', (_, value) => {
    expect(registeredSchedule(value)).toBe(DEFAULT);
    expect(parseSettings({ KEY_VAULT_URL: 'https://kv.example/', TRACK_SCHEDULE: value }).problems).toEqual([
      expect.stringMatching(/^TRACK_SCHEDULE must be/),
    ]);
  });
});
