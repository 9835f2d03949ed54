// Every role assignment of the deployment, each on the narrowest scope that works.
// Role definition ids are the built-in ones, identical in every tenant:
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles

@description('Principal id of the app\'s user-assigned managed identity.')
param appPrincipalId string

@description('Object id of the deploying user or pipeline; empty: no role for it.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string = 'User'

param keyVaultName string
param serviceBusNamespaceName string
param requestQueueName string
param responseQueueName string
param applicationInsightsName string
param storageAccountName string
param stateTableName string

var roleIds = {
  // Read secret values. Only works on vaults in RBAC mode.
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  // Create, update and delete secrets, not manage access.
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  // Receive (and complete, abandon, dead-letter) messages.
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  // Send messages.
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  // Publish telemetry to Application Insights with an Entra token.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // Blob containers and blobs, including the host's own containers and leases.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Read, write and delete table entities.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: serviceBusNamespaceName
}

resource requestQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = {
  parent: namespace
  name: requestQueueName
}

resource responseQueue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = {
  parent: namespace
  name: responseQueueName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource tableServices 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableServices
  name: stateTableName
}

// The app reads the three MDE secrets. Vault scope: Key Vault has no narrower scope for a secret that
// does not exist yet (the operator creates them after deployment).
resource appKeyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appPrincipalId, roleIds.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mde-unisolate reads the MDE app registration credentials.'
  }
}

// The Service Bus trigger receives from the request queue.
resource appRequestQueueReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(requestQueue.id, appPrincipalId, roleIds.serviceBusDataReceiver)
  scope: requestQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataReceiver)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mde-unisolate receives release requests.'
  }
}

// The resume timer hands parked releases back to the request queue (a message naming the release).
resource appRequestQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(requestQueue.id, appPrincipalId, roleIds.serviceBusDataSender)
  scope: requestQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mde-unisolate hands parked releases back to its request queue.'
  }
}

// Outcomes are sent to the response queue only.
resource appResponseQueueSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(responseQueue.id, appPrincipalId, roleIds.serviceBusDataSender)
  scope: responseQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataSender)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mde-unisolate sends release outcomes.'
  }
}

// Telemetry with an Entra token: Application Insights has local auth disabled.
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, roleIds.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mde-unisolate sends telemetry.'
  }
}

// The Functions host's own storage (AzureWebJobsStorage) and the Flex Consumption deployment container.
// Storage Blob Data Owner is what the Functions docs require for identity-based host storage and what the
// official Flex Consumption samples grant: the host creates and manages its own containers
// (azure-webjobs-hosts, azure-webjobs-secrets, which holds the function keys), takes blob leases, and the
// platform reads the deployment package. The host creates containers, so a container-scoped Contributor
// cannot replace it. It is scoped to this storage account, which holds nothing but this app's data.
// No queue role: the app has no storage-queue trigger, blob trigger or Durable Functions.
// https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
resource appStorageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roleIds.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Functions host storage and Flex Consumption deployment package.'
  }
}

// The app's release state: entities in one table. Scoped to that table, not the account.
resource appStateTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateTable.id, appPrincipalId, roleIds.storageTableDataContributor)
  scope: stateTable
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'mde-unisolate keeps release state.'
  }
}

// The deploying user (or pipeline) sets the three MDE secrets after `azd up` (docs/deploy.md).
resource userKeyVaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vault.id, userPrincipalId, roleIds.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsOfficer)
    principalId: userPrincipalId
    principalType: userPrincipalType
    description: 'Operator sets the MDE app registration credentials.'
  }
}
