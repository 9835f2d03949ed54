/**
 * The app settings the functions' binding expressions name (`%REQUEST_QUEUE_NAME%`, `%RESPONSE_QUEUE_NAME%`),
 * filled in where unset with the values of `local.settings.sample.json`, as a local host gets them from
 * `local.settings.json`. Without them `dev/host` refuses to index the app, as the Functions host does. Imported
 * for its effect: a jest setup file, and the sandbox.
 */
import sample from '../local.settings.sample.json';

for (const name of ['REQUEST_QUEUE_NAME', 'RESPONSE_QUEUE_NAME'] as const) {
  process.env[name] ||= sample.Values[name];
}
