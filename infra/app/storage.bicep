// Storage for the function host (AzureWebJobsStorage), the Flex Consumption deployment package and the
// app's state table. Shared-key access is disabled: every caller uses Entra ID (managed identity).

param name string
param location string
param tags object = {}

@description('Blob container the Flex Consumption platform deploys the app package from.')
param deploymentContainerName string

@description('Table the app keeps its release state in.')
param stateTableName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }

  resource blobServices 'blobServices' = {
    name: 'default'

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }
  }

  resource tableServices 'tableServices' = {
    name: 'default'

    resource stateTable 'tables' = {
      name: stateTableName
    }
  }
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output deploymentContainerName string = storage::blobServices::deploymentContainer.name
output stateTableName string = storage::tableServices::stateTable.name
// A table URL (`https://<account>.table.core.windows.net/<table>`), taken from the account's endpoints
// so it is right in every cloud.
output stateTableUrl string = '${storage.properties.primaryEndpoints.table}${stateTableName}'
