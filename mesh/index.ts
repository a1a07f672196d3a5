// The public face of mesh/: the device mesh and (later) collectives and parallelism plans.
export { DeviceMesh, MeshError, resolveMeshShape, checkMeshAgainstModel } from "./device-mesh.ts";
export type { MeshShape, MeshCoord, MeshModelLimits, RankLayout } from "./device-mesh.ts";
export * from "./collectives/index.ts";
export * from "./plans/index.ts";
