// Validates an AsyncAPI document with the official parser (@asyncapi/parser): prints every
// diagnostic, and fails on any of error severity (or when nothing could be parsed).
//
// Usage: node check.mjs <http(s) URL | file>
import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const source = process.argv[2];
if (!source) {
  console.error('usage: node check.mjs <http(s) URL | file>');
  process.exit(2);
}

let text;
if (/^https?:\/\//.test(source)) {
  const response = await fetch(source);
  if (!response.ok) {
    console.error(`${source}: HTTP ${response.status}`);
    process.exit(1);
  }
  text = await response.text();
} else {
  text = await readFile(source, 'utf8');
}

const { document, diagnostics } = await new Parser().parse(text);
const severity = (d) => DiagnosticSeverity[d.severity] ?? String(d.severity);
for (const d of diagnostics) {
  const at = d.path?.length ? d.path.join('.') : '(document)';
  console.log(`${severity(d)}: ${at}: ${d.message} [${d.code}]`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
if (errors.length > 0 || !document) {
  console.error(`${source}: ${errors.length} error(s); the document is not valid AsyncAPI`);
  process.exit(1);
}
console.log(
  `${source}: valid AsyncAPI ${document.version()}: ` +
    `${document.channels().length} channels, ${document.operations().length} operations, ` +
    `${document.components().messages().length} messages, ` +
    `${diagnostics.length} diagnostic(s) below error severity`,
);
