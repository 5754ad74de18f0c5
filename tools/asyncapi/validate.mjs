// Parse and validate each AsyncAPI document with the official parser: schema of the
// document, $ref resolution (including ../common/*.schema.json) and the spec's rules.
// Usage: node tools/asyncapi/validate.mjs proto/*/asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';

const parser = new Parser();
let failed = 0;
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await fromFile(parser, file).parse();
  const errors = diagnostics.filter((d) => d.severity === 0);
  const warnings = diagnostics.filter((d) => d.severity === 1);
  if (!document || errors.length) failed++;
  const summary = document
    ? `${document.operations().length} operations, ${document.channels().length} channels`
    : 'not parsed';
  console.log(`${file}: ${errors.length ? 'INVALID' : 'valid'} (${summary}; ` +
    `${errors.length} errors, ${warnings.length} warnings)`);
  for (const d of [...errors, ...warnings]) {
    console.log(`  ${d.severity === 0 ? 'error' : 'warning'} ${d.code}: ${d.message} at ${d.path.join('/')}`);
  }
}
process.exit(failed ? 1 : 0);
