/**
 * Entry point (`package.json` `main`): app setup and the function files, nothing else. Importing this
 * registers every function.
 */
import { app } from '@azure/functions';

app.setup({ enableHttpStream: false });

import './functions/unisolateHttp';
import './functions/unisolateServiceBus';
import './functions/trackReleases';
import './functions/releaseStatus';
import './functions/openapi';
import './functions/selfTest';
