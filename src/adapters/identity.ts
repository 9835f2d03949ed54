/**
 * The app's own identity, for Key Vault, the state table and AAD-authenticated telemetry: the managed identity
 * in Azure (the platform sets IDENTITY_ENDPOINT), the developer's Azure CLI / azd login elsewhere.
 *
 * The credential is built here only, from an {@link IdentitySpec}: plain data, so that the telemetry worker
 * thread (which cannot receive a credential object) builds the very same credential as this thread.
 */
import {
  AzureCliCredential,
  AzureDeveloperCliCredential,
  ChainedTokenCredential,
  ManagedIdentityCredential,
  type TokenCredential,
} from '@azure/identity';

/** Which identity to authenticate as (structured-cloneable, so it can cross to a worker thread). */
export interface IdentitySpec {
  /** True in Azure, where the platform provides a managed identity endpoint. */
  managed: boolean;
  /** A user-assigned managed identity's client id; undefined: the system-assigned identity. */
  clientId: string | undefined;
}

/** Describes the app's identity in `env`: managed when IDENTITY_ENDPOINT (or the older MSI_ENDPOINT) is set. */
export function identitySpec(
  clientId: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): IdentitySpec {
  return { managed: Boolean(env.IDENTITY_ENDPOINT || env.MSI_ENDPOINT), clientId };
}

/** The credential for `spec`. */
export function credentialFor(spec: IdentitySpec): TokenCredential {
  if (spec.managed) {
    return spec.clientId
      ? new ManagedIdentityCredential({ clientId: spec.clientId })
      : new ManagedIdentityCredential();
  }
  return new ChainedTokenCredential(new AzureCliCredential(), new AzureDeveloperCliCredential());
}

/** The identity the app reads Key Vault (and sends telemetry) with. */
export function appIdentity(
  clientId: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): TokenCredential {
  return credentialFor(identitySpec(clientId, env));
}
