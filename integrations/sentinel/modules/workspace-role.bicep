// Microsoft Sentinel Responder on the Sentinel workspace for one principal: read incidents and their
// entities, add comments. It cannot change analytics rules, automation or data connectors.
// https://learn.microsoft.com/azure/sentinel/roles and
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/security#microsoft-sentinel-responder

@description('Log Analytics workspace with Microsoft Sentinel enabled.')
param workspaceName string

@description('Object id of the playbook\'s managed identity.')
param principalId string

var sentinelResponderRoleId = '3e150937-b8fe-4cfb-8069-0eaf05ecd056' // Microsoft Sentinel Responder

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource responderRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: workspace
  name: guid(workspace.id, principalId, sentinelResponderRoleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', sentinelResponderRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
