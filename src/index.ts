/**
 * Entry point (`package.json` `main`): app setup and the function files, nothing else. Importing this
 * registers every function.
 */
import { app } from '@azure/functions';
import { keepRawTriggerMetadata } from './adapters/rawTriggerMetadata';

app.setup({ enableHttpStream: false });

import './functions/unisolateHttp';
import './functions/unisolateServiceBus';
import './functions/trackReleases';
import './functions/resumeReleases';
import './functions/releaseStatus';
import './functions/openapi';
import './functions/selfTest';

// After the registrations (the library sets its programming model on the first one): handlers can then read
// Service Bus ids as the host sent them, before the library's JSON conversion.
keepRawTriggerMetadata();
