// Service Bus namespace with the request queue (read by the Service Bus trigger) and the response queue
// (every outcome is sent to it). Local (SAS) authentication is disabled: senders and receivers use
// Entra ID, each with a role on one queue only (rbac.bicep).

param name string
param location string
param tags object = {}

@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param skuName string = 'Standard'

param requestQueueName string
param responseQueueName string

@description('Deliveries of one request before Service Bus dead-letters it. The app reads the same value (MAX_DELIVERY_COUNT) to report, instead of retry, a transient failure on the last delivery.')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuName
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource requestQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: requestQueueName
  properties: {
    maxDeliveryCount: maxDeliveryCount
    // The lock must outlast one invocation: the function may spend up to 60 s (MDE_RETRY_BUDGET_MS for
    // Service Bus) retrying and waiting out rate limits, plus one Defender call of up to 30 s
    // (MDE_REQUEST_TIMEOUT_MS) and the Key Vault / token look-ups. 2 minutes covers that with margin,
    // so a slow but healthy invocation is not redelivered to a second instance while it still runs
    // (the Functions host also renews the lock). Keep it short so a crashed instance's message comes
    // back quickly. Service Bus allows at most PT5M.
    lockDuration: 'PT2M'
    // A request to release a device that waited a day is stale: dead-letter it for a human to look at
    // rather than acting on it late.
    defaultMessageTimeToLive: 'P1D'
    deadLetteringOnMessageExpiration: true
    requiresSession: false
  }
}

resource responseQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: namespace
  name: responseQueueName
  properties: {
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    // Outcomes wait for the consumer (e.g. a SOAR playbook) for up to 14 days, then are dead-lettered.
    defaultMessageTimeToLive: 'P14D'
    deadLetteringOnMessageExpiration: true
    requiresSession: false
  }
}

output id string = namespace.id
output name string = namespace.name
// `https://<ns>.servicebus.windows.net:443/` -> `<ns>.servicebus.windows.net`, correct in every cloud.
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '/')[2], ':')[0]
output requestQueueName string = requestQueue.name
output responseQueueName string = responseQueue.name
// The value the queue was deployed with, so the app setting is derived from the queue itself.
output requestQueueMaxDeliveryCount int = requestQueue.properties.maxDeliveryCount
