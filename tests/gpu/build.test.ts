// On the GPU machine: the addon was built with its CUDA backend, cuBLASLt and NCCL, and sees
// the GPUs. Run with `npm run test:gpu` there (see ../shared/device/README.md).
import { test } from "node:test";
import assert from "node:assert/strict";
import { buildInfo } from "../../native/index.ts";

test("the addon carries CUDA, cuBLASLt and NCCL and sees at least one GPU", () => {
  const info = buildInfo();
  assert.equal(info.cpu, true);
  assert.equal(info.cuda, true, "CMake did not take the CUDA branch");
  assert.equal(info.cublasLt, true, "cuBLASLt was not found");
  assert.equal(info.nccl, true, "NCCL was not found");
  assert.ok(info.cudaDevices >= 1, `cudaGetDeviceCount gave ${info.cudaDevices}`);
});
