// The local sandbox (`npm start`): its tracker settings let a simulated release's completion arrive on the
// tracker's next run, as the README says, instead of waiting for the tracker's share of the budget to free.
import { LOCAL_TRACKER_SETTINGS, TRACK_EVERY_MS } from '../../scripts/sandbox';
import { parseSettings, settingOf } from '../../src/config';
import {
  EMPTY_LEDGER,
  grantable,
  HOUR_MS,
  LocalBudget,
  recordGrant,
  type Ledger,
} from '../../src/core/budget';
import { DEFAULT_LEASE_TIMING } from '../../src/core/sharedBudget';

/** Seconds into two hours of polling at which a run of the sandbox's tracker finds no budget for its call. */
async function refusedRuns(grant: (now: number) => Promise<boolean> | boolean): Promise<number[]> {
  const start = Date.UTC(2026, 0, 1);
  const refused: number[] = [];
  for (let t = 0; t <= 2 * HOUR_MS; t += TRACK_EVERY_MS) {
    if (!(await grant(start + t))) refused.push(t / 1000);
  }
  return refused;
}

describe('sandbox tracker settings', () => {
  const { config, problems } = parseSettings({ ...LOCAL_TRACKER_SETTINGS });

  it('are valid settings of the app', () => {
    expect(problems.filter((p) => settingOf(p).startsWith('TRACK_'))).toEqual([]);
  });

  it('give every tracker run a list call from the shared ledger (state table)', async () => {
    let ledger: Ledger = EMPTY_LEDGER;
    const refused = await refusedRuns((now) => {
      if (grantable(ledger, config.trackerRateLimit, now, DEFAULT_LEASE_TIMING).calls === 0) return false;
      ledger = recordGrant(ledger, 1, now, DEFAULT_LEASE_TIMING);
      return true;
    });
    expect(refused).toEqual([]);
  });

  it("give every tracker run a list call from this instance's own limiter (state table unreachable)", async () => {
    let clock = 0;
    const budget = new LocalBudget(
      { perApi: config.rateLimit, tracker: config.trackerRateLimit },
      () => clock,
    );
    const refused = await refusedRuns(async (now) => {
      clock = now;
      const answer = await budget.acquire('listMachineActions', 'tracker');
      if (answer.granted) answer.slot.release(true);
      return answer.granted;
    });
    expect(refused).toEqual([]);
  });
});
