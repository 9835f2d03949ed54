/**
 * The deployment docs say what the templates do: same secret names, same queries, same roles.
 */
import fs from 'node:fs';
import path from 'node:path';
import { BicepFile, INFRA_DIR, loadInfra, REPO_ROOT } from './bicep';

const read = (relative: string): string => fs.readFileSync(path.join(REPO_ROOT, relative), 'utf8');

describe('docs', () => {
  let files: Map<string, BicepFile>;
  const deploy = read('docs/deploy.md');
  const monitoring = read('docs/monitoring.md');

  beforeAll(async () => {
    files = await loadInfra();
  });

  it('deploy.md sets each Key Vault secret the app reads, by the name api.bicep gives it', () => {
    const api = files.get('app/api.bicep')!;
    const names = ['kvSecretTenantIdName', 'kvSecretClientIdName', 'kvSecretClientSecretName'].map(
      (param) => api.params.get(param)?.defaultValue,
    );
    expect(names).toEqual(['mde-tenant-id', 'mde-client-id', 'mde-client-secret']);
    for (const name of names as string[]) {
      expect(deploy).toMatch(
        new RegExp(`az keyvault secret set --vault-name "\\$KEY_VAULT" --name ${name} `),
      );
    }
  });

  it('deploy.md covers sign-in, azd up, the MDE permission and a smoke test', () => {
    for (const text of [
      'azd auth login',
      'azd up',
      'Machine.Isolate',
      'WindowsDefenderATP',
      'admin-consent',
      'az functionapp keys list',
      'curl ',
      'azd env set MDE_CLOUD',
    ]) {
      expect(deploy).toContain(text);
    }
  });

  it('deploy.md documents every parameter azd maps', () => {
    const parameters = JSON.parse(fs.readFileSync(path.join(INFRA_DIR, 'main.parameters.json'), 'utf8')) as {
      parameters: Record<string, { value: string }>;
    };
    const azdOwned = new Set(['AZURE_ENV_NAME', 'AZURE_LOCATION', 'AZURE_PRINCIPAL_ID']);
    for (const { value } of Object.values(parameters.parameters)) {
      const variable = /^\$\{([A-Z_]+)/.exec(value)?.[1];
      expect(variable).toBeDefined();
      if (!azdOwned.has(variable!)) expect(deploy).toContain(`\`${variable}\``);
    }
  });

  it('monitoring.md shows every query the workbook and alert use, exactly', () => {
    const kqlDir = path.join(INFRA_DIR, 'app', 'kql');
    const queries = fs.readdirSync(kqlDir).filter((name) => name.endsWith('.kql'));
    expect(queries.length).toBeGreaterThan(0);
    for (const query of queries) {
      const text = fs.readFileSync(path.join(kqlDir, query), 'utf8').trimEnd();
      expect({ query, shown: monitoring.includes(`\`\`\`kusto\n${text}\n\`\`\``) }).toEqual({
        query,
        shown: true,
      });
    }
  });
});
