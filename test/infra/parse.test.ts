/**
 * The Bicep templates parse (tree-sitter-bicep), so a syntax slip fails here rather than at deploy.
 */
import path from 'node:path';
import fs from 'node:fs';
import { Language, LANGUAGE_VERSION, MIN_COMPATIBLE_VERSION } from 'web-tree-sitter';
import { bicepFiles, bicepParser, INFRA_DIR, parseBicepSource, syntaxProblems } from './bicep';

describe('Bicep syntax (tree-sitter-bicep)', () => {
  let language: Language;

  beforeAll(async () => {
    ({ language } = await bicepParser());
  });

  it('loads a grammar whose ABI web-tree-sitter supports', () => {
    expect(language.abiVersion).toBeGreaterThanOrEqual(MIN_COMPATIBLE_VERSION);
    expect(language.abiVersion).toBeLessThanOrEqual(LANGUAGE_VERSION);
  });

  it('finds the templates', () => {
    const files = bicepFiles().map((file) => path.relative(INFRA_DIR, file).split(path.sep).join('/'));
    expect(files).toEqual(expect.arrayContaining(['main.bicep', 'app/api.bicep', 'app/rbac.bicep']));
  });

  it.each(bicepFiles().map((file) => [path.relative(INFRA_DIR, file), file]))(
    '%s parses without ERROR or MISSING nodes',
    async (_name, file) => {
      const tree = await parseBicepSource(fs.readFileSync(file, 'utf8'));
      expect(syntaxProblems(tree)).toEqual([]);
    },
  );

  // The check above is only worth something if it can fail.
  it.each([
    ['an unclosed object', "resource kv 'Microsoft.KeyVault/vaults@2023-07-01' = {\n  name: 'kv'\n"],
    ['a parameter without a type', 'param location = 1\n'],
    ['a stray operator', "var x = 'a' +\n"],
  ])('reports %s', async (_what, source) => {
    const tree = await parseBicepSource(source);
    expect(syntaxProblems(tree)).not.toEqual([]);
  });
});
