/**
 * Jest setup: the app settings the functions' binding expressions name (`%REQUEST_QUEUE_NAME%`,
 * `%RESPONSE_QUEUE_NAME%`), as `local.settings.sample.json` sets them for a local host, so `dev/host` indexes
 * the app as the Functions host would and reports output messages by queue name.
 */
import sample from '../../local.settings.sample.json';

for (const name of ['REQUEST_QUEUE_NAME', 'RESPONSE_QUEUE_NAME'] as const) {
  process.env[name] ??= sample.Values[name];
}
