/**
 * docs/integrations.md tells ticketing systems what to do with each answer: its table must cover every HTTP
 * status the app can answer a release with (from the same table the app answers with).
 */
import fs from 'node:fs';
import path from 'node:path';
import { statusTable } from '../../src/core/openapi';

const DOC = fs.readFileSync(path.join(__dirname, '..', '..', 'docs', 'integrations.md'), 'utf8');

/** HTTP statuses (and outcome statuses) named in the first column(s) of the "Outcome → ticket" table. */
function documented(): { http: Set<number>; statuses: Set<string> } {
  const section = DOC.split('### Outcome → ticket')[1]?.split('\n\n')[1] ?? '';
  const http = new Set<number>();
  const statuses = new Set<string>();
  for (const row of section.split('\n').slice(2)) {
    const [, codes = '', names = ''] = row.split('|');
    for (const code of codes.match(/\d{3}/g) ?? []) http.add(Number(code));
    for (const name of names.match(/`([A-Za-z]+)`/g) ?? []) statuses.add(name.replace(/`/g, ''));
  }
  return { http, statuses };
}

describe('docs/integrations.md', () => {
  it('maps every HTTP status and outcome status of a release to a ticket action', () => {
    const { http, statuses } = documented();
    const table = statusTable();
    // Statuses of the completion messages and the status endpoint never answer a release request.
    const completion = new Set(['Released', 'ReleaseFailed', 'TrackingExpired']);
    const expected = [...table].filter(([status]) => !completion.has(status));
    expect(expected.map(([status]) => status).filter((s) => !statuses.has(s))).toEqual([]);
    const codes = new Set(expected.flatMap(([, set]) => [...set]));
    expect([...codes].filter((code) => !http.has(code)).sort()).toEqual([]);
    expect(http.has(207)).toBe(true); // bulk
  });

  it('the check can fail: the parser sees the table (not an empty section)', () => {
    expect(documented().http.size).toBeGreaterThan(8);
  });
});
