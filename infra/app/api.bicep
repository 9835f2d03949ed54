// The function app: Flex Consumption (FC1), Node.js 22, running as the user-assigned identity.
// Every connection is identity-based; no app setting holds a key, a SAS or a connection string with a
// secret (the Application Insights connection string only locates the resource; local auth is off).

param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client id of the user-assigned managed identity the app runs as.')
param identityClientId string

param storageAccountName string

@description('Blob endpoint of the storage account, `https://<account>.blob.core.windows.net/`.')
param storageBlobEndpoint string

param deploymentContainerName string
param stateTableUrl string
param applicationInsightsConnectionString string
param keyVaultUri string
param serviceBusFullyQualifiedNamespace string
param requestQueueName string
param responseQueueName string

@description('The request queue\'s maxDeliveryCount, passed on to the app as MAX_DELIVERY_COUNT.')
param maxDeliveryCount int

@allowed([
  'Commercial'
  'GCC'
  'GCCHigh'
  'DoD'
])
param mdeCloud string

@description('How the app authenticates as the MDE app (MDE_CREDENTIAL).')
@allowed([
  'secret'
  'certificate'
  'federated'
])
param mdeCredential string = 'secret'

@description('Tenant and client id of the MDE app registration (MDE_TENANT_ID, MDE_CLIENT_ID); empty: read from Key Vault.')
param mdeTenantId string = ''
param mdeClientId string = ''

// Names of the Key Vault secrets and certificate holding the MDE app registration credentials (set by the
// operator).
param kvSecretTenantIdName string = 'mde-tenant-id'
param kvSecretClientIdName string = 'mde-client-id'
param kvSecretClientSecretName string = 'mde-client-secret'
param kvCertificateName string = 'mde-client-certificate'

@description('NCRONTAB schedule of the tracker that polls accepted releases until their machine action ends (TRACK_SCHEDULE).')
param trackSchedule string = '0 */1 * * * *'

@description('NCRONTAB schedule of the timer that hands parked releases back to the request queue (RESUME_SCHEDULE).')
param resumeSchedule string = '*/30 * * * * *'

@description('Comma-separated app roles a caller must hold (checked by the app from X-MS-CLIENT-PRINCIPAL); empty: no role check.')
param allowedCallerRoles string = ''

@description('Name of the Key Vault secret holding the webhook signing key (WEBHOOK_SIGNING_SECRET_NAME); empty: HTTP requests need no signature.')
param webhookSigningSecretName string = ''

@description('More app settings, e.g. the optional ones in src/config.ts (RELEASE_POLICY, ...). Never secrets: those belong in Key Vault. The settings in `appSettings` take precedence.')
param additionalAppSettings object = {}

@description('Turn on App Service Authentication: HTTP calls must carry an Entra ID token for `authClientId`.')
param enableAppServiceAuth bool = false

@description('Client id of the Entra app registration callers get tokens for (required when enableAppServiceAuth).')
param authClientId string = ''

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// Every setting the code reads with scope 'azure' in src/config.ts SETTINGS (checked by
// test/infra/wiring.test.ts), plus the host's own identity-based storage connection.
var appSettings = {
  // Host storage over the managed identity (no AzureWebJobsStorage connection string).
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // Key Vault with the MDE app registration's credentials.
  KEY_VAULT_URL: keyVaultUri
  KV_SECRET_TENANT_ID: kvSecretTenantIdName
  KV_SECRET_CLIENT_ID: kvSecretClientIdName
  KV_SECRET_CLIENT_SECRET: kvSecretClientSecretName
  KV_CERTIFICATE_NAME: kvCertificateName
  // secret | certificate | federated; the ids may be given here instead of in Key Vault (not secrets).
  MDE_CREDENTIAL: mdeCredential
  MDE_TENANT_ID: mdeTenantId
  MDE_CLIENT_ID: mdeClientId
  // The identity DefaultAzureCredential / ManagedIdentityCredential use.
  AZURE_CLIENT_ID: identityClientId
  MDE_CLOUD: mdeCloud
  // Service Bus trigger and output binding, identity-based.
  REQUEST_QUEUE_NAME: requestQueueName
  RESPONSE_QUEUE_NAME: responseQueueName
  ServiceBusConnection__fullyQualifiedNamespace: serviceBusFullyQualifiedNamespace
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identityClientId
  MAX_DELIVERY_COUNT: string(maxDeliveryCount)
  // Telemetry, sent with an Entra token for the managed identity (local auth is disabled).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD;ClientId=${identityClientId}'
  // Release state (Table Storage), identity-based; the timers that track accepted releases and hand parked
  // ones back (the Defender API budget lives in the same table, shared by every instance).
  STATE_TABLE_URL: stateTableUrl
  TRACK_SCHEDULE: trackSchedule
  RESUME_SCHEDULE: resumeSchedule
  // Caller checks: app roles (with App Service Authentication) and signed requests.
  ALLOWED_CALLER_ROLES: allowedCallerRoles
  WEBHOOK_SIGNING_SECRET_NAME: webhookSigningSecretName
  // V8 heap sizing for this small-footprint app (live heap ~20 MB): a 1 MB young generation and a 128 MB
  // old generation keep the worker's RSS low (npm run bench, figure 5: peak RSS 183 -> 132 MB). The
  // benchmark reads this value, so it measures what is deployed.
  languageWorkers__node__arguments: '--max-semi-space-size=1 --max-old-space-size=128'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the app to deploy the `api` service to by this tag.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }

  // Replaces all app settings on every deployment: set extra ones through additionalAppSettings, not in the
  // portal. The settings in `appSettings` win over additionalAppSettings.
  resource appSettingsConfig 'config' = {
    name: 'appsettings'
    properties: union(additionalAppSettings, appSettings)
  }

  // Deployments use Entra ID (azd, `az functionapp deploy`); publishing with a user name and password
  // over FTP or to the SCM site is turned off.
  resource ftpPublishing 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: {
      allow: false
    }
  }

  resource scmPublishing 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: {
      allow: false
    }
  }

  // Optional App Service Authentication: the platform validates the caller's Entra ID token before the
  // function runs (on top of the function key) and passes the caller in X-MS-CLIENT-PRINCIPAL.
  // No client secret: the app only validates tokens, it never signs anyone in.
  resource authSettings 'config' = if (enableAppServiceAuth) {
    name: 'authsettingsV2'
    properties: {
      platform: {
        enabled: true
      }
      globalValidation: {
        requireAuthentication: true
        unauthenticatedClientAction: 'Return401'
      }
      identityProviders: {
        azureActiveDirectory: {
          enabled: true
          registration: {
            clientId: authClientId
            openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
          }
          validation: {
            allowedAudiences: [
              authClientId
              'api://${authClientId}'
            ]
          }
        }
      }
      login: {
        tokenStore: {
          enabled: false
        }
      }
    }
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
