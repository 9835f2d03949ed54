// mde-unisolate: releases devices from isolation in Microsoft Defender for Endpoint.
// azd entry point (`azd up`): a resource group with the function app and everything it uses.
// Identity-based connections only: no keys, SAS or connection strings with secrets anywhere.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; part of the resource group name and of the unique resource token.')
param environmentName string

@minLength(1)
@description('Region of every resource. Must offer the Flex Consumption plan (`az functionapp list-flexconsumption-locations`).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the user or pipeline running the deployment; gets Key Vault Secrets Officer to set the MDE secrets. Empty: none.')
param principalId string = ''

@description('Kind of principal `principalId` is.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Defender for Endpoint cloud: picks the API host, login authority and token scope (MDE_CLOUD).')
@allowed([
  'Commercial'
  'GCC'
  'GCCHigh'
  'DoD'
])
param mdeCloud string = 'Commercial'

@description('How the app authenticates as the MDE app (MDE_CREDENTIAL): `secret` (client secret in Key Vault), `certificate` (Key Vault certificate) or `federated` (this deployment\'s managed identity as a federated credential of the MDE app: no secret). See docs/security.md.')
@allowed([
  'secret'
  'certificate'
  'federated'
])
param mdeCredential string = 'secret'

@description('Tenant id of the MDE app registration (MDE_TENANT_ID); empty: read from the Key Vault secret mde-tenant-id.')
param mdeTenantId string = ''

@description('Client id of the MDE app registration (MDE_CLIENT_ID); empty: read from the Key Vault secret mde-client-id.')
param mdeClientId string = ''

@description('Deliveries of one request before it is dead-lettered; also given to the app as MAX_DELIVERY_COUNT.')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int = 10

@description('Turn on App Service Authentication (Entra ID tokens for `authClientId` required on HTTP calls).')
param enableAppServiceAuth bool = false

@description('Client id of the Entra app registration HTTP callers get tokens for; required when enableAppServiceAuth.')
param authClientId string = ''

@description('Comma-separated app roles an HTTP caller must hold (ALLOWED_CALLER_ROLES); empty: no role check.')
param allowedCallerRoles string = ''

@description('Name of the Key Vault secret holding the webhook signing key (WEBHOOK_SIGNING_SECRET_NAME); empty: HTTP requests need no signature.')
param webhookSigningSecretName string = ''

@description('More app settings, e.g. optional ones from src/config.ts such as RELEASE_POLICY. Never secrets: those belong in Key Vault.')
param additionalAppSettings object = {}

@description('Resource id of an existing action group the failure alert notifies; empty: no notification.')
param alertActionGroupId string = ''

@description('Most instances the app scales out to. Each instance caps its own Defender calls, so fewer instances keep the tenant-wide MDE limits (100/min, 1500/h) within reach.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Days a deleted Key Vault can be recovered (purge protection is on, so this is binding).')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionInDays int = 90

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var requestQueueName = 'unisolate-requests'
var responseQueueName = 'unisolate-responses'
var stateTableName = 'releases'
// Workload identity federation (MDE_CREDENTIAL=federated): the managed identity's tokens are issued by its own
// tenant on this cloud's login host, for the token exchange audience of the MDE cloud (src/config.ts
// TOKEN_EXCHANGE_AUDIENCES; GCC uses the commercial one).
// https://learn.microsoft.com/entra/workload-id/workload-identity-federation-config-app-trust-managed-identity
var federatedCredentialIssuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
var tokenExchangeAudience = contains(['GCCHigh', 'DoD'], mdeCloud) ? 'api://AzureADTokenExchangeUSGov' : 'api://AzureADTokenExchange'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    stateTableName: stateTableName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionInDays
  }
}

module serviceBus 'app/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    name: '${abbrs.serviceBusNamespaces}${resourceToken}'
    location: location
    tags: tags
    requestQueueName: requestQueueName
    responseQueueName: responseQueueName
    maxDeliveryCount: maxDeliveryCount
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    keyVaultName: keyVault.outputs.name
    serviceBusNamespaceName: serviceBus.outputs.name
    requestQueueName: serviceBus.outputs.requestQueueName
    responseQueueName: serviceBus.outputs.responseQueueName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    storageAccountName: storage.outputs.name
    stateTableName: storage.outputs.stateTableName
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    stateTableUrl: storage.outputs.stateTableUrl
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    keyVaultUri: keyVault.outputs.uri
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    requestQueueName: serviceBus.outputs.requestQueueName
    responseQueueName: serviceBus.outputs.responseQueueName
    // From the deployed queue, so the app and Service Bus agree on the last delivery.
    maxDeliveryCount: serviceBus.outputs.requestQueueMaxDeliveryCount
    mdeCloud: mdeCloud
    mdeCredential: mdeCredential
    mdeTenantId: mdeTenantId
    mdeClientId: mdeClientId
    allowedCallerRoles: allowedCallerRoles
    webhookSigningSecretName: webhookSigningSecretName
    additionalAppSettings: additionalAppSettings
    enableAppServiceAuth: enableAppServiceAuth
    authClientId: authClientId
    maximumInstanceCount: maximumInstanceCount
  }
  // Start the host only once its identity may read its storage, secrets and queues.
  dependsOn: [
    rbac
  ]
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    name: '${abbrs.insightsScheduledQueryRules}failed-releases-${resourceToken}'
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    actionGroupId: alertActionGroupId
  }
}

module workbook 'app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${api.outputs.defaultHostName}'
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URL string = keyVault.outputs.uri
output SERVICE_BUS_NAMESPACE string = serviceBus.outputs.name
output SERVICE_BUS_FULLY_QUALIFIED_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output REQUEST_QUEUE_NAME string = serviceBus.outputs.requestQueueName
output RESPONSE_QUEUE_NAME string = serviceBus.outputs.responseQueueName
output STATE_TABLE_URL string = storage.outputs.stateTableUrl
// Not a secret: Application Insights has local auth disabled, so the key in it cannot send telemetry.
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.applicationInsightsConnectionString
output AZURE_CLIENT_ID string = identity.outputs.clientId
output MDE_CREDENTIAL string = mdeCredential
// What the MDE app registration must trust for MDE_CREDENTIAL=federated, and the command that adds it
// (docs/deploy.md). Identifiers only: nothing here is a secret.
output MDE_FEDERATED_CREDENTIAL_ISSUER string = federatedCredentialIssuer
output MDE_FEDERATED_CREDENTIAL_SUBJECT string = identity.outputs.principalId
output MDE_FEDERATED_CREDENTIAL_AUDIENCE string = tokenExchangeAudience
output MDE_FEDERATED_CREDENTIAL_COMMAND string = 'az ad app federated-credential create --id ${empty(mdeClientId) ? '<MDE app client id>' : mdeClientId} --parameters \'{"name":"mde-unisolate-${resourceToken}","issuer":"${federatedCredentialIssuer}","subject":"${identity.outputs.principalId}","audiences":["${tokenExchangeAudience}"]}\''
