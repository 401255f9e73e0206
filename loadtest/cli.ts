// `npm run loadtest -- …`: a Twilio Media Streams load test against a running gateway, with a
// live progress line, a summary table, JSON + HTML reports and SLO exit codes (see --help).
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HELP, parseOptions, UsageError } from './cli-options.js';
import { runLoadTest, type Progress } from './load-test.js';
import { formatTable } from './report.js';
import { renderHtml } from './html-report.js';

const EXIT_SLO_MISSED = 1;
const EXIT_USAGE = 2;

function progressLine(p: Progress): string {
  return `[${p.phase.padEnd(9)}] t=${p.t.toFixed(0).padStart(4)}s  streams up ${String(p.streamsUp).padStart(5)}  ` +
    `${Math.round(p.mediaPerSecond).toString().padStart(6)} msg/s  errors ${p.errors}`;
}

async function main(argv: string[]): Promise<number> {
  let opts;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`loadtest: ${err.message}\n(see --help)\n`);
    return EXIT_USAGE;
  }
  if (opts === 'help') {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  // A TTY gets one line rewritten in place; logs and CI get plain lines.
  const tty = process.stdout.isTTY === true;
  const onProgress = (p: Progress) => {
    if (tty) process.stdout.write(`\r\x1b[2K${progressLine(p)}`);
    else process.stdout.write(`${progressLine(p)}\n`);
  };
  const command = `npm run loadtest -- ${argv.join(' ')}`.trim();
  let report;
  try {
    report = await runLoadTest(opts, command, onProgress);
  } catch (err) {
    if (tty) process.stdout.write('\n');
    process.stderr.write(`loadtest: the run failed: ${(err as Error).message}\n`);
    return EXIT_USAGE;
  }
  if (tty) process.stdout.write('\n');
  process.stdout.write(`\n${formatTable(report.table)}\n`);
  if (report.streams.errorSamples.length > 0) process.stdout.write(`\nerrors (first ${report.streams.errorSamples.length}):\n  ${report.streams.errorSamples.join('\n  ')}\n`);
  await mkdir(opts.reportDir, { recursive: true });
  const base = path.join(opts.reportDir, `loadtest-${report.startedAt.replace(/[:.]/g, '-')}`);
  await writeFile(`${base}.json`, JSON.stringify(report, null, 2) + '\n');
  await writeFile(`${base}.html`, renderHtml(report));
  process.stdout.write(`\nreport: ${base}.json\n        ${base}.html\nverdict: ${report.verdict === 'pass' ? 'PASS' : 'MISS'}\n`);
  return report.verdict === 'pass' ? 0 : EXIT_SLO_MISSED;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: Error) => { process.stderr.write(`loadtest: ${err.stack ?? err.message}\n`); process.exitCode = EXIT_USAGE; },
);
