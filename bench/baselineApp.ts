/**
 * The cold-start baseline: an app that imports only `@azure/functions` and answers one trivial request. It
 * reads the JSON body and echoes it, so the comparison with the real app covers the same worker and request
 * plumbing.
 */
import { app } from '@azure/functions';

app.http('ping', {
  methods: ['POST'],
  authLevel: 'anonymous',
  handler: async (request) => ({ status: 200, jsonBody: { ok: true, received: await request.json() } }),
});
