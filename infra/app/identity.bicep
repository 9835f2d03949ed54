// The one identity of the app: the function host, the Service Bus trigger and output, Key Vault,
// Table Storage and telemetry all authenticate with it. A user-assigned identity (not system-assigned)
// so that role assignments exist before the function app is created and survive its re-creation.

@description('Name of the user-assigned managed identity.')
param name string

param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
