/**
 * Local simulators of the external services mde-unisolate talks to, for tests, benchmarks and the sandbox.
 * Everything listens on 127.0.0.1 only. See each module for the protocol details it reproduces.
 */
export * from './server';
export * from './tls';
export * from './tokens';
export * from './jwt';
export * from './odata';
export * from './managedIdentity';
export * from './keyVault';
export * from './entra';
export * from './defender';
export * from './ingestion';
