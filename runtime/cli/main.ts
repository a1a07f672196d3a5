// The `tessera` CLI: a command table, each command with its own --help.
export async function main(argv: string[]): Promise<number> {
  console.log("tessera: commands arrive soon", argv);
  return 0;
}
