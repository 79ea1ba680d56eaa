// The `vlmscope` command.
import { Command, CommanderError } from 'commander';
import { traceCommand } from './trace.js';
import { reportAndExit } from './errors.js';

const program = new Command('vlmscope')
  .description('A WebGPU vision-language model engine for research on attention heads')
  .option('--verbose', 'print stack traces with errors')
  .exitOverride()
  .addCommand(traceCommand().exitOverride());

const verbose = process.argv.includes('--verbose');
try {
  await program.parseAsync(process.argv);
} catch (e) {
  // Commander has already printed its own usage errors and help; only the exit code is left to set.
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2);
  reportAndExit(e, verbose);
}
