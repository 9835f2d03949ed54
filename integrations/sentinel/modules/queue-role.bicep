// One Service Bus data role for one principal on ONE queue (not the namespace), in the resource group
// that holds the namespace. Only the two data roles a playbook needs are allowed here, so a caller cannot
// pass Data Owner by mistake. Role ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles

@description('Service Bus namespace that holds the queue.')
param serviceBusNamespaceName string

@description('The queue the role is granted on.')
param queueName string

@description('Object id of the playbook\'s managed identity.')
param principalId string

@description('Azure Service Bus Data Sender (69a216fc-...) or Azure Service Bus Data Receiver (4f6d3b9b-...).')
@allowed([
  '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39' // Azure Service Bus Data Sender
  '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0' // Azure Service Bus Data Receiver
])
param roleDefinitionId string

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: serviceBusNamespaceName
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' existing = {
  parent: namespace
  name: queueName
}

resource queueRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: queue
  name: guid(queue.id, principalId, roleDefinitionId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
    principalId: principalId
    // A managed identity: skips the directory look-up that can fail right after the identity is created.
    principalType: 'ServicePrincipal'
  }
}
