// The mesh shape for a world size: the one -1 dim (if any) is inferred. Pure config logic;
// mesh/ lays ranks out on the resolved shape.
import { ConfigError } from "./problems.ts";
import type { MeshSection } from "./schema.ts";

export interface MeshShape {
  dp: number;
  fsdp: number;
  sp: number;
}

export function resolveMesh(mesh: MeshSection, worldSize: number): MeshShape {
  const fail = (message: string): never => {
    throw new ConfigError([{ where: "", path: "mesh", message }]);
  };
  if (!Number.isInteger(worldSize) || worldSize < 1) fail(`world size must be a positive integer, got ${worldSize}`);
  const dims = ["dp", "fsdp", "sp"] as const;
  const inferred = dims.filter((d) => mesh[d] === -1);
  if (inferred.length > 1) fail(`at most one dim may be -1, got -1 for ${inferred.join(", ")}`);
  const known = dims.reduce((p, d) => (mesh[d] === -1 ? p : p * mesh[d]), 1);
  const shown = `dp=${mesh.dp} fsdp=${mesh.fsdp} sp=${mesh.sp}`;
  const [free] = inferred;
  if (free === undefined) {
    if (known !== worldSize) fail(`${shown} needs ${known} ranks, the world has ${worldSize}`);
    return { dp: mesh.dp, fsdp: mesh.fsdp, sp: mesh.sp };
  }
  if (worldSize % known !== 0) fail(`${shown}: world size ${worldSize} is not a multiple of ${known}`);
  return { dp: mesh.dp, fsdp: mesh.fsdp, sp: mesh.sp, [free]: worldSize / known };
}
