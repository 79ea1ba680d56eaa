// The `vlmscope` command.
import { Command } from 'commander';

const program = new Command('vlmscope').description('A WebGPU vision-language model engine for research on attention heads');
program.parseAsync(process.argv).catch((e) => {
  console.error(`vlmscope: ${(e as Error).message}`);
  process.exit(1);
});
