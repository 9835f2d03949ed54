/** @type {import('jest').Config} */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  setupFiles: ['<rootDir>/dev/loopbackOnly.ts', '<rootDir>/dev/appSettings.ts'],
  transform: { '^.+\\.ts$': 'ts-jest' },
  testTimeout: 30000,
  // The Functions worker injects @azure/functions-core; tests get the local stand-in that dev/host drives.
  moduleNameMapper: { '^@azure/functions-core$': '<rootDir>/dev/functionsCore.ts' },
};
