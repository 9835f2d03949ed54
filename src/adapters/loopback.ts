/**
 * Loopback detection. Local simulators need two SDK relaxations (Key Vault challenge resource verification,
 * Entra instance discovery); we allow them only for loopback hosts, never for a host in Azure.
 */
const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\]|::1)$/i;

/** Whether `url` points at this machine. */
export function isLoopbackUrl(url: string): boolean {
  try {
    return LOOPBACK.test(new URL(url).hostname);
  } catch {
    return false;
  }
}
