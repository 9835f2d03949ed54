// Log alert: any release that ended Failed or Forbidden. Forbidden means the MDE app registration lacks
// Machine.Isolate (or admin consent); Failed covers Defender outages, rejected credentials and bugs.
// Each needs a human, so the alert fires on the first one.

param name string
param location string
param tags object = {}
param applicationInsightsId string

@description('Resource id of an existing action group to notify; empty: the alert only shows in Azure Monitor.')
param actionGroupId string = ''

resource failedOutcomes 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'mde-unisolate: release Failed or Forbidden'
    description: 'A UnisolateOutcome event with status Failed or Forbidden was recorded. See docs/monitoring.md.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: loadTextContent('kql/failed-outcomes.kql')
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(actionGroupId) ? [] : [
        actionGroupId
      ]
    }
  }
}

output id string = failedOutcomes.id
