/** @type {import('jest').Config} */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  setupFiles: ['<rootDir>/dev/loopbackOnly.ts'],
  transform: { '^.+\\.ts$': 'ts-jest' },
  testTimeout: 30000,
  // The Functions worker injects @azure/functions-core; tests use a recorder instead (see the file).
  moduleNameMapper: { '^@azure/functions-core$': '<rootDir>/test/support/functionsCore.ts' },
};
