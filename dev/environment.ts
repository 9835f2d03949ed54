/**
 * A complete local environment for the app: managed identity, Key Vault (holding the MDE app's secrets),
 * Entra ID, Defender for Endpoint and Application Insights ingestion simulators, and the app settings that
 * point the real SDKs at them. Used by integration tests, the sandbox and the benchmarks.
 */
import { buildDependencies, setDependencies, type AppDependencies } from '../src/composition';
import type { Clock } from '../src/core/ports';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  CERTS_DIR,
  connectionString,
  defaultMachines,
  startDefender,
  startEntra,
  startIngestion,
  startKeyVault,
  startManagedIdentity,
  type DefenderSimOptions,
  type DefenderSimulator,
  type EntraSimulator,
  type IngestionSimulator,
  type KeyVaultSimulator,
  type ManagedIdentitySimulator,
} from './simulators';

/** The MDE app registration the simulators know. Test values: they must never leak into logs or outcomes. */
export const MDE_APP = {
  tenantId: '72f988bf-0000-4000-8000-00000000c0de',
  clientId: '5a1e5a1e-0000-4000-8000-0000000a99c1',
  clientSecret: 'S3cr3t~mde-client-secret-value-DO-NOT-LEAK',
  /** Application permissions granted (the roles of its tokens). */
  roles: ['Machine.Isolate', 'Machine.Read.All'],
};

/** The function app's user-assigned managed identity (attached to the managed identity simulator). */
export const APP_IDENTITY = { clientId: '1d1d1d1d-0000-4000-8000-0000000001d1' };

/** Name of the MDE app's certificate in the Key Vault simulator (the app's default `KV_CERTIFICATE_NAME`). */
export const CERTIFICATE_NAME = 'mde-client-certificate';

/** A test-only certificate of dev/certs: PEM (key + certificate), or PKCS#12 bytes. */
export const testCertificate = {
  pem: (n: 1 | 2): string => readFileSync(path.join(CERTS_DIR, `mde-app-${n}.pem`), 'utf8'),
  pfx: (n: 1 | 2, flavour: 'aes' | 'legacy'): Buffer =>
    readFileSync(path.join(CERTS_DIR, `mde-app-${n}-${flavour}.pfx`)),
  /** Only the public part, as uploaded to an app registration. */
  publicPart: (n: 1 | 2): string => {
    const pem = testCertificate.pem(n);
    return pem.slice(pem.indexOf('-----BEGIN CERTIFICATE-----'));
  },
};

/** Running simulators plus the settings that point the app at them. */
export interface LocalEnvironment {
  mi: ManagedIdentitySimulator;
  keyVault: KeyVaultSimulator;
  entra: EntraSimulator;
  defender: DefenderSimulator;
  ingestion: IngestionSimulator;
  /** App settings (`process.env`-style) for `buildDependencies`. */
  settings: Record<string, string>;
  /** Builds the app's real dependencies against the simulators and installs them. */
  install(overrides?: Record<string, string>, clock?: Clock): AppDependencies;
  close(): Promise<void>;
}

/** Options of {@link startEnvironment}. */
export interface EnvironmentOptions {
  defender?: DefenderSimOptions;
  telemetry?: boolean;
}

/** Starts every simulator on 127.0.0.1 and sets the managed identity variables in `process.env`. */
export async function startEnvironment(options: EnvironmentOptions = {}): Promise<LocalEnvironment> {
  const mi = await startManagedIdentity({
    tenantId: MDE_APP.tenantId,
    userAssignedClientIds: [APP_IDENTITY.clientId],
  });
  const [entra, defender, ingestion] = await Promise.all([
    // The MDE app has all three credentials: its client secret, the first test certificate, and the
    // function's user-assigned identity as a federated identity credential (commercial audience).
    startEntra({
      tenantId: MDE_APP.tenantId,
      clients: { [MDE_APP.clientId]: MDE_APP.clientSecret },
      certificates: { [MDE_APP.clientId]: [testCertificate.publicPart(1)] },
      federatedCredentials: {
        [MDE_APP.clientId]: [
          {
            issuer: mi.issuer,
            subject: mi.principalIdOf(APP_IDENTITY.clientId),
            audiences: ['api://AzureADTokenExchange'],
          },
        ],
      },
      trustedIssuers: { [mi.issuer]: mi.jwks },
      roles: { [MDE_APP.clientId]: MDE_APP.roles },
    }),
    startDefender({ machines: defaultMachines(), ...options.defender }),
    startIngestion(),
  ]);
  const keyVault = await startKeyVault({
    secrets: {
      'mde-tenant-id': MDE_APP.tenantId,
      'mde-client-id': MDE_APP.clientId,
      'mde-client-secret': MDE_APP.clientSecret,
    },
  });
  keyVault.setCertificate(CERTIFICATE_NAME, { pem: testCertificate.pem(1) });
  // ManagedIdentityCredential reads these from process.env when it is constructed.
  process.env.IDENTITY_ENDPOINT = mi.env.IDENTITY_ENDPOINT;
  process.env.IDENTITY_HEADER = mi.env.IDENTITY_HEADER;

  const settings: Record<string, string> = {
    KEY_VAULT_URL: `${keyVault.url}/`,
    MDE_API_BASE_URL: defender.url,
    MDE_AUTHORITY_HOST: entra.url,
    IDENTITY_ENDPOINT: mi.env.IDENTITY_ENDPOINT,
    IDENTITY_HEADER: mi.env.IDENTITY_HEADER,
    REQUEST_QUEUE_NAME: 'unisolate-requests',
    RESPONSE_QUEUE_NAME: 'unisolate-responses',
    MDE_REQUEST_TIMEOUT_MS: '2000',
    ...(options.telemetry === false
      ? {}
      : { APPLICATIONINSIGHTS_CONNECTION_STRING: connectionString(ingestion) }),
  };
  const installed: AppDependencies[] = [];
  return {
    mi,
    keyVault,
    entra,
    defender,
    ingestion,
    settings,
    install(overrides = {}, clock) {
      const deps = buildDependencies({ ...settings, ...overrides }, clock);
      installed.push(deps);
      setDependencies(deps);
      return deps;
    },
    async close() {
      // Let every telemetry client finish loading and sending before the simulators go away.
      await Promise.all(installed.map((deps) => deps.telemetry.flush()));
      setDependencies();
      await Promise.all([mi, keyVault, entra, defender, ingestion].map((s) => s.close()));
    },
  };
}
