// Parse an AsyncAPI document with @asyncapi/parser, resolving every $ref. Prints the
// parser's diagnostics on stderr and, when there is no error, the resolved document as
// JSON on stdout (parser annotations removed), so tests can compare it with its sources.
// Exit 1 on any error-level diagnostic.
'use strict';

const path = require('node:path');
const { Parser, fromFile, DiagnosticSeverity } = require('@asyncapi/parser');

const SEVERITY = ['error', 'warning', 'info', 'hint'];

function withoutAnnotations(value) {
  if (Array.isArray(value)) return value.map(withoutAnnotations);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([key]) => !key.startsWith('x-parser-'))
      .map(([key, inner]) => [key, withoutAnnotations(inner)]),
  );
}

async function main() {
  const file = path.resolve(process.argv[2]);
  const { document, diagnostics } = await fromFile(new Parser(), file).parse();
  for (const d of diagnostics) {
    const where = d.path.join('/') || '(document)';
    process.stderr.write(`${SEVERITY[d.severity]} ${d.code} at ${where}: ${d.message}\n`);
  }
  const failed = diagnostics.some((d) => d.severity === DiagnosticSeverity.Error);
  if (failed || document === undefined) {
    process.stderr.write(`${file}: not a valid AsyncAPI document\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify(withoutAnnotations(document.json()))}\n`);
}

main().catch((err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
