// The node arguments the deployed app runs with: `languageWorkers__node__arguments` in infra/app/api.bicep,
// read by the build (the code cache must be produced under the same V8 flags, scripts/codeCache.cjs) and by the
// benchmark (its children run as deployed).
'use strict';
const { readFileSync } = require('node:fs');
const path = require('node:path');

/** The deployed node arguments, as an argv array. */
function deployedNodeArguments(root) {
  const bicep = readFileSync(path.join(root, 'infra', 'app', 'api.bicep'), 'utf8');
  const value = /languageWorkers__node__arguments:\s*'([^']*)'/.exec(bicep)?.[1] ?? '';
  return value.split(' ').filter(Boolean);
}

module.exports = { deployedNodeArguments };
