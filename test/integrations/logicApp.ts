/**
 * Offline reading of Logic App workflow definitions (the `*.workflow.json` files the playbook templates load
 * with `loadJsonContent`): their actions, and their expression templates evaluated against sample values.
 * Workflow definition language: https://learn.microsoft.com/azure/logic-apps/logic-apps-workflow-definition-language
 */
import fs from 'node:fs';

/** A trigger or action of a workflow definition (the parts the tests read). */
export interface WorkflowStep {
  type: string;
  inputs?: unknown;
  runAfter?: Record<string, string[]>;
  expression?: unknown;
  foreach?: string;
  recurrence?: unknown;
  actions?: Record<string, WorkflowStep>;
  else?: { actions?: Record<string, WorkflowStep> };
}

/** A workflow definition. */
export interface WorkflowDefinition {
  $schema: string;
  parameters: Record<string, { type: string; defaultValue?: unknown }>;
  triggers: Record<string, WorkflowStep>;
  actions: Record<string, WorkflowStep>;
}

/** Reads a workflow definition file. */
export function readWorkflow(file: string): WorkflowDefinition {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as WorkflowDefinition;
}

/** Every action, nested ones (loops, conditions, else branches) included, by name. */
export function allActions(definition: Pick<WorkflowDefinition, 'actions'>): Map<string, WorkflowStep> {
  const found = new Map<string, WorkflowStep>();
  const walk = (actions: Record<string, WorkflowStep> | undefined): void => {
    for (const [name, action] of Object.entries(actions ?? {})) {
      if (found.has(name)) throw new Error(`action name ${name} is used twice`);
      found.set(name, action);
      walk(action.actions);
      walk(action.else?.actions);
    }
  };
  walk(definition.actions);
  return found;
}

/**
 * Evaluates the expression templates in a value: `"@{expr}"` inside strings and whole-string `"@expr"`,
 * each replaced by `samples[expr]` (matched on the exact expression text). An expression without a sample
 * is reported in `unknown`, so a changed template cannot slip through with a guessed value.
 */
export function substitute(
  value: unknown,
  samples: Readonly<Record<string, string>>,
): { value: unknown; unknown: string[] } {
  const unknown: string[] = [];
  const lookup = (expression: string): string => {
    const sample = samples[expression];
    if (sample === undefined) {
      unknown.push(expression);
      return '';
    }
    return sample;
  };
  const visit = (current: unknown): unknown => {
    if (typeof current === 'string') {
      if (current.startsWith('@') && !current.startsWith('@{') && !current.startsWith('@@')) {
        return lookup(current.slice(1));
      }
      return current.replace(/@\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}/g, (_match, expression: string) =>
        lookup(expression),
      );
    }
    if (Array.isArray(current)) return current.map(visit);
    if (typeof current === 'object' && current !== null) {
      return Object.fromEntries(Object.entries(current).map(([key, inner]) => [key, visit(inner)]));
    }
    return current;
  };
  return { value: visit(value), unknown };
}

/**
 * The property paths read from an action's output, e.g. `body('Parse_outcome')?['error']?['message']`
 * gives `error.message`. Scans the JSON text, so it sees every expression wherever it is.
 */
export function pathsReadFrom(text: string, actionName: string): Set<string> {
  const escaped = actionName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const access = new RegExp(`body\\('${escaped}'\\)((?:\\?\\['[^']*'\\])+)`, 'g');
  const paths = new Set<string>();
  for (const match of text.matchAll(access)) {
    const keys = [...match[1]!.matchAll(/\['([^']*)'\]/g)].map((key) => key[1]!);
    paths.add(keys.join('.'));
  }
  return paths;
}
