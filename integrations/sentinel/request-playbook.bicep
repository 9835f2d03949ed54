// Microsoft Sentinel playbook (Consumption Logic App): on an incident, one release request per host entity
// to the mde-unisolate request queue. No keys: the playbook's system-assigned identity authenticates both
// connections and holds only Service Bus Data Sender on the request queue and Microsoft Sentinel Responder
// on the workspace. The workflow itself is request-playbook.workflow.json (code view of the designer).
// See docs/integrations.md.
//
// Managed identity for managed connectors, ARM form (parameterValueType / parameterValueSet):
// https://learn.microsoft.com/azure/logic-apps/authenticate-with-managed-identity#arm-template-for-api-connections-and-managed-identities

@description('Name of the Logic App. Outcomes are matched back by "Sentinel playbook <name>" (requestedBy).')
param playbookName string = 'unisolate-request'

param location string = resourceGroup().location

@description('Service Bus namespace deployed by azd (output SERVICE_BUS_NAMESPACE).')
param serviceBusNamespaceName string

@description('Resource group of the Service Bus namespace (output AZURE_RESOURCE_GROUP).')
param serviceBusResourceGroup string = resourceGroup().name

@description('Queue the app reads requests from (app setting REQUEST_QUEUE_NAME).')
param requestQueueName string = 'unisolate-requests'

@description('Log Analytics workspace with Microsoft Sentinel.')
param workspaceName string

@description('Resource group of the Sentinel workspace.')
param workspaceResourceGroup string = resourceGroup().name

param tags object = {}

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: serviceBusNamespaceName
  scope: resourceGroup(serviceBusResourceGroup)
}

resource sentinelConnection 'Microsoft.Web/connections@2016-06-01' = {
  name: 'azuresentinel-${playbookName}'
  location: location
  tags: tags
  #disable-next-line BCP187
  kind: 'V1'
  properties: {
    displayName: 'azuresentinel-${playbookName}'
    api: {
      id: subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'azuresentinel')
    }
    // Single-authentication connector used with the managed identity.
    #disable-next-line BCP037
    parameterValueType: 'Alternative'
  }
}

resource serviceBusConnection 'Microsoft.Web/connections@2016-06-01' = {
  name: 'servicebus-${playbookName}'
  location: location
  tags: tags
  #disable-next-line BCP187
  kind: 'V1'
  properties: {
    displayName: 'servicebus-${playbookName}'
    api: {
      id: subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'servicebus')
    }
    // Multi-authentication connector: "Logic Apps Managed Identity" with the namespace endpoint
    // (sb://<namespace>.servicebus.windows.net/, derived from the namespace so it is right in every cloud).
    #disable-next-line BCP037
    parameterValueSet: {
      name: 'managedIdentityAuth'
      values: {
        namespaceEndpoint: {
          value: replace(replace(namespace.properties.serviceBusEndpoint, 'https://', 'sb://'), ':443/', '/')
        }
      }
    }
  }
}

resource playbook 'Microsoft.Logic/workflows@2019-05-01' = {
  name: playbookName
  location: location
  tags: union(tags, { 'hidden-SentinelTemplateName': 'mde-unisolate-request' })
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
    definition: loadJsonContent('request-playbook.workflow.json')
    parameters: {
      '$connections': {
        value: {
          azuresentinel: {
            connectionId: sentinelConnection.id
            connectionName: sentinelConnection.name
            id: subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'azuresentinel')
            connectionProperties: {
              authentication: {
                type: 'ManagedServiceIdentity'
              }
            }
          }
          servicebus: {
            connectionId: serviceBusConnection.id
            connectionName: serviceBusConnection.name
            id: subscriptionResourceId('Microsoft.Web/locations/managedApis', location, 'servicebus')
            connectionProperties: {
              authentication: {
                type: 'ManagedServiceIdentity'
              }
            }
          }
        }
      }
      requestQueueName: {
        value: requestQueueName
      }
    }
  }
}

// Send to the request queue only: it cannot read outcomes or touch any other queue.
module requestQueueSender 'modules/queue-role.bicep' = {
  name: 'role-${playbookName}-sender'
  scope: resourceGroup(serviceBusResourceGroup)
  params: {
    serviceBusNamespaceName: serviceBusNamespaceName
    queueName: requestQueueName
    principalId: playbook.identity.principalId
    roleDefinitionId: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39' // Azure Service Bus Data Sender
  }
}

// Read the incident's entities and comment on the incident (hosts that could not be sent).
module sentinelResponder 'modules/workspace-role.bicep' = {
  name: 'role-${playbookName}-responder'
  scope: resourceGroup(workspaceResourceGroup)
  params: {
    workspaceName: workspaceName
    principalId: playbook.identity.principalId
  }
}

output PLAYBOOK_ID string = playbook.id
output PLAYBOOK_PRINCIPAL_ID string = playbook.identity.principalId
