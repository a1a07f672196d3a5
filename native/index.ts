// The TypeScript face of the native addon. Everything outside native/ imports from here.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

export interface BuildInfo {
  cpu: boolean;
  cuda: boolean;
  cudaDevices: number;
  cublasLt: boolean;
  nccl: boolean;
}

interface Addon {
  buildInfo(): BuildInfo;
}

const here = dirname(fileURLToPath(import.meta.url));
const addonPath = join(here, "build", "Release", "tessera_native.node");

let addon: Addon | undefined;

/** Loads the compiled addon once; a missing build is an error that says how to make one. */
export function loadAddon(): Addon {
  if (addon) return addon;
  if (!existsSync(addonPath)) {
    throw new Error(`native addon not built: ${addonPath} is missing; run \`npm run build:native\``);
  }
  addon = createRequire(import.meta.url)(addonPath) as Addon;
  return addon;
}

export function buildInfo(): BuildInfo {
  return loadAddon().buildInfo();
}
