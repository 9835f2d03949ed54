// Azure Monitor workbook over the UnisolateOutcome events: outcomes over time, latency, throttling,
// by trigger, recent failures. The queries are the files in kql/, also shown in docs/monitoring.md.

param location string
param tags object = {}
param applicationInsightsId string

@description('Time range the workbook opens with.')
param timeRangeMs int = 604800000

var charts = [
  {
    title: 'Outcomes over time'
    query: loadTextContent('kql/outcomes-over-time.kql')
    visualization: 'timechart'
  }
  {
    title: 'Latency (durationMs)'
    query: loadTextContent('kql/latency.kql')
    visualization: 'timechart'
  }
  {
    title: 'Throttling and retries'
    query: loadTextContent('kql/throttling.kql')
    visualization: 'timechart'
  }
  {
    title: 'Outcomes by trigger'
    query: loadTextContent('kql/by-trigger.kql')
    visualization: 'table'
  }
  {
    title: 'Recent Failed or Forbidden releases'
    query: loadTextContent('kql/failed-outcomes.kql')
    visualization: 'table'
  }
]

var items = [for (chart, i) in charts: {
  type: 3
  name: 'query-${i}'
  content: {
    version: 'KqlItem/1.0'
    title: chart.title
    query: chart.query
    size: 0
    timeContext: {
      durationMs: timeRangeMs
    }
    queryType: 0
    resourceType: 'microsoft.insights/components'
    visualization: chart.visualization
  }
}]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // Workbook names must be GUIDs.
  name: guid(applicationInsightsId, 'mde-unisolate-outcomes')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'mde-unisolate outcomes'
    category: 'workbook'
    // Lower case, or the workbook does not show under the Application Insights resource.
    sourceId: toLower(applicationInsightsId)
    serializedData: string({
      version: 'Notebook/1.0'
      items: items
      fallbackResourceIds: [
        toLower(applicationInsightsId)
      ]
    })
  }
}

output id string = workbook.id
