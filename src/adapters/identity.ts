/**
 * The app's own identity, for Key Vault, the state table and AAD-authenticated telemetry: the managed identity
 * in Azure (the platform sets IDENTITY_ENDPOINT), the developer's Azure CLI / azd login elsewhere.
 *
 * The credential is built here only, from an {@link IdentitySpec}, for every client that needs one.
 */
import type { PipelinePolicy } from '@azure/core-rest-pipeline';
import {
  AzureCliCredential,
  AzureDeveloperCliCredential,
  ChainedTokenCredential,
  ManagedIdentityCredential,
  type TokenCredential,
} from '@azure/identity';

/** Which identity to authenticate as: a description, turned into a credential by {@link credentialFor}. */
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

/**
 * The scope Key Vault's authentication challenge names for `vaultUrl`: the vault's DNS suffix as a resource
 * (`https://<name>.vault.azure.net` → `https://vault.azure.net/.default`, likewise in the sovereign clouds). A
 * loopback vault (local simulator) stands for the public cloud's.
 * https://learn.microsoft.com/azure/key-vault/general/authentication-requests-and-responses
 */
export function vaultTokenScope(vaultUrl: string, loopback: boolean): string {
  const suffix = loopback ? 'vault.azure.net' : new URL(vaultUrl).hostname.split('.').slice(1).join('.');
  return `https://${suffix}/.default`;
}

/**
 * A pipeline policy for the Key Vault client that, on the client's first request, asks `identity` for the
 * vault's token without waiting for it. The Key Vault SDK sends its first request without a token to learn
 * the scope from the vault's challenge (a 401), and only then asks the identity; fetched ahead, the token is
 * in the identity's cache when the challenge needs it, so a cold start waits for one round trip less. A
 * failure here is left to the challenge's own request for the token, which reports it.
 */
export function prefetchVaultToken(identity: TokenCredential, scope: string): PipelinePolicy {
  let fetched = false;
  return {
    name: 'mdeUnisolatePrefetchVaultToken',
    sendRequest(request, next) {
      if (!fetched) {
        fetched = true;
        identity.getToken(scope).catch(() => undefined);
      }
      return next(request);
    },
  };
}
