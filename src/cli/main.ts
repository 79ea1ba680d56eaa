// The `vlmscope` command.
import { Command, CommanderError } from 'commander';
import { traceCommand } from './trace.js';
import { generateCommand } from './generate.js';
import { evalCommand } from './eval.js';
import { collectCommand } from './collect.js';
import { probeCommand } from './probe.js';
import { ablateCommand } from './ablate.js';
import { attentionMapCommand } from './attention-map.js';
import { axisProbeCommand } from './axis-probe.js';
import { sweepCommand } from './sweep.js';
import { adaptVisTableCommand } from './adaptvis-table.js';
import { knockoutCommand } from './knockout.js';
import { patchCommand } from './patch.js';
import { headsBenchmarkCommand } from './heads-benchmark.js';
import { reportAndExit } from './errors.js';

/** Commander's own errors (bad or missing options) as one `vlmscope:` line pointing at the command's help. */
function oneLineErrors(cmd: Command, path: string): Command {
  return cmd.exitOverride().configureOutput({
    outputError: (str, write) => write(`vlmscope: ${str.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')} (see \`${path} --help\`)\n`),
  });
}

const program = oneLineErrors(
  new Command('vlmscope')
    .description('A WebGPU vision-language model engine for research on attention heads')
    .option('--verbose', 'print stack traces with errors')
    .addHelpText(
      'after',
      `
Examples:
  vlmscope generate --model weights/tiny-llava --image tests/fixtures/tiny-llava/image.png --prompt "What is in the image?"
  vlmscope generate --model ./llava-1.5-7b-hf --image photo.jpg --prompt "Where is the dog?" --temperature 0.7 --seed 1 --json
  vlmscope trace --model ./llava-1.5-7b-hf --image photo.jpg --ids ids.json --capture capture.json --out trace.json
  vlmscope eval --model weights/tiny-llava --data synthetic/questions.jsonl --limit 200 --out results.jsonl
  vlmscope attention-map --image examples/scene.png --prompt "Where is the green circle?" --layer 3 --out map.png

Run \`vlmscope <command> --help\` for a command's options. Exit codes: 0 ok, 1 runtime error, 2 usage error.`,
    ),
  'vlmscope',
)
  .addCommand(oneLineErrors(traceCommand(), 'vlmscope trace'))
  .addCommand(oneLineErrors(generateCommand(), 'vlmscope generate'))
  .addCommand(oneLineErrors(evalCommand(), 'vlmscope eval'))
  .addCommand(oneLineErrors(collectCommand(), 'vlmscope collect'))
  .addCommand(oneLineErrors(probeCommand(), 'vlmscope probe'))
  .addCommand(oneLineErrors(ablateCommand(), 'vlmscope ablate'))
  .addCommand(oneLineErrors(attentionMapCommand(), 'vlmscope attention-map'))
  .addCommand(oneLineErrors(axisProbeCommand(), 'vlmscope axis-probe'))
  .addCommand(oneLineErrors(sweepCommand(), 'vlmscope sweep'))
  .addCommand(oneLineErrors(adaptVisTableCommand(), 'vlmscope adaptvis-table'))
  .addCommand(oneLineErrors(knockoutCommand(), 'vlmscope knockout'))
  .addCommand(oneLineErrors(patchCommand(), 'vlmscope patch'))
  .addCommand(oneLineErrors(headsBenchmarkCommand(), 'vlmscope heads-benchmark'));

const verbose = process.argv.includes('--verbose');
try {
  await program.parseAsync(process.argv);
} catch (e) {
  // Commander has already printed its own usage errors and help; only the exit code is left to set.
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  reportAndExit(e, verbose);
}
