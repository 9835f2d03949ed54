// Microsoft Sentinel playbook (Consumption Logic App): reads mde-unisolate outcomes from the response queue
// (peek-lock) and writes each outcome of a request sent by the request playbook back to its incident as a
// comment. The outcome's correlationId is the incident's name (its GUID, the last segment of the incident
// ARM id), so the incident ARM id is the workspace's incident prefix + correlationId. No keys: the
// system-assigned identity holds only Service Bus Data Receiver on the response queue and Microsoft
// Sentinel Responder on the workspace. The workflow is response-playbook.workflow.json.
// See docs/integrations.md.

@description('Name of this Logic App.')
param playbookName string = 'unisolate-response'

@description('Name of the request playbook: only outcomes with requestedBy "Sentinel playbook <name>" are written back.')
param requestPlaybookName string = 'unisolate-request'

param location string = resourceGroup().location

@description('Service Bus namespace deployed by azd (output SERVICE_BUS_NAMESPACE).')
param serviceBusNamespaceName string

@description('Resource group of the Service Bus namespace (output AZURE_RESOURCE_GROUP).')
param serviceBusResourceGroup string = resourceGroup().name

@description('Queue the app sends every outcome to (app setting RESPONSE_QUEUE_NAME).')
param responseQueueName string = 'unisolate-responses'

@description('Log Analytics workspace with Microsoft Sentinel (the same as the request playbook\'s).')
param workspaceName string

@description('Resource group of the Sentinel workspace.')
param workspaceResourceGroup string = resourceGroup().name

param tags object = {}

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' existing = {
  name: serviceBusNamespaceName
  scope: resourceGroup(serviceBusResourceGroup)
}

// Incident ARM ids: <workspace id>/providers/Microsoft.SecurityInsights/Incidents/<incident name (GUID)>
// https://learn.microsoft.com/rest/api/securityinsights/incidents/get
var incidentArmIdPrefix = '${resourceId(workspaceResourceGroup, 'Microsoft.OperationalInsights/workspaces', workspaceName)}/providers/Microsoft.SecurityInsights/Incidents/'

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
  tags: union(tags, { 'hidden-SentinelTemplateName': 'mde-unisolate-response' })
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    state: 'Enabled'
    definition: loadJsonContent('response-playbook.workflow.json')
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
      responseQueueName: {
        value: responseQueueName
      }
      requestPlaybookName: {
        value: requestPlaybookName
      }
      incidentArmIdPrefix: {
        value: incidentArmIdPrefix
      }
    }
  }
}

// Receive (and complete) outcomes only: it cannot send requests.
module responseQueueReceiver 'modules/queue-role.bicep' = {
  name: 'role-${playbookName}-receiver'
  scope: resourceGroup(serviceBusResourceGroup)
  params: {
    serviceBusNamespaceName: serviceBusNamespaceName
    queueName: responseQueueName
    principalId: playbook.identity.principalId
    roleDefinitionId: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0' // Azure Service Bus Data Receiver
  }
}

// Add comments to incidents.
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
