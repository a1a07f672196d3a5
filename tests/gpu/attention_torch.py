"""PyTorch reference for Tessera's varlen attention (tests/gpu/attention.test.ts, attention.bench.ts).

  python3 tests/gpu/attention_torch.py DIR     reads DIR/case.json and the raw little-endian
      float32 files it names (q, k, v, dout), computes per-sequence
      F.scaled_dot_product_attention and its backward in float32 on the GPU, and writes
      o, lse, dq, dk, dv as raw float32 files into DIR.
  python3 tests/gpu/attention_torch.py --bench  prints one JSON line: sdpa forward and backward
      times and TFLOP/s (bf16, causal) at the two Qwen2.5 shapes of the benchmark.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def read(dir_, name, shape):
    data = torch.from_numpy(np.fromfile(os.path.join(dir_, name + ".f32"), dtype="<f4"))
    return data.reshape(shape).cuda()


def write(dir_, name, t):
    t.detach().float().contiguous().cpu().numpy().astype("<f4").tofile(os.path.join(dir_, name + ".f32"))


def visible_mask(n, causal, window, device):
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    vis = torch.ones(n, n, dtype=torch.bool, device=device)
    if causal:
        vis &= j <= i
    if window > 0:
        vis &= j > i - window
    return vis


def reference(dir_):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with open(os.path.join(dir_, "case.json")) as f:
        case = json.load(f)
    T, Hq, Hkv, Dh = case["T"], case["Hq"], case["Hkv"], case["Dh"]
    causal, window, scale = case["causal"], case["window"], case["scale"]
    q = read(dir_, "q", (T, Hq, Dh)).requires_grad_()
    k = read(dir_, "k", (T, Hkv, Dh)).requires_grad_()
    v = read(dir_, "v", (T, Hkv, Dh)).requires_grad_()
    dout = read(dir_, "dout", (T, Hq, Dh))
    rep = Hq // Hkv
    outs, lses = [], []
    cu = case["cuSeqlens"]
    for s, e in zip(cu[:-1], cu[1:]):
        if e == s:
            continue
        qs = q[s:e].transpose(0, 1)  # [Hq, n, Dh]
        ks = k[s:e].transpose(0, 1).repeat_interleave(rep, dim=0)
        vs = v[s:e].transpose(0, 1).repeat_interleave(rep, dim=0)
        vis = visible_mask(e - s, causal, window, q.device)
        if window > 0:
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=vis, scale=scale)
        else:
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale)
        scores = (qs.detach() @ ks.detach().transpose(1, 2)) * scale
        lses.append(torch.logsumexp(scores.masked_fill(~vis, float("-inf")), dim=-1))  # [Hq, n]
        outs.append(o.transpose(0, 1))
    o = torch.cat(outs, dim=0)
    o.backward(dout)
    write(dir_, "o", o)
    write(dir_, "lse", torch.cat(lses, dim=1))
    write(dir_, "dq", q.grad)
    write(dir_, "dk", k.grad)
    write(dir_, "dv", v.grad)


def bench():
    shapes = [("qwen2.5-0.5b", 14, 2, 64), ("qwen2.5-1.5b", 12, 2, 128)]
    B, N = 4, 2048
    flops_fwd = lambda Hq, Dh: 4 * B * N * N / 2 * Hq * Dh
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    for name, Hq, Hkv, Dh in shapes:
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(B, Hq, N, Dh, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        k = torch.randn(B, Hkv, N, Dh, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        v = torch.randn(B, Hkv, N, Dh, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        dout = torch.randn(B, Hq, N, Dh, device="cuda", dtype=torch.bfloat16, generator=g)

        def fwd():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        def fwd_bwd():
            o = fwd()
            torch.autograd.grad(o, (q, k, v), dout)

        def time_ms(fn, reps=20):
            for _ in range(3):
                fn()
            samples = []
            for _ in range(5):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                for _ in range(reps):
                    fn()
                b.record()
                torch.cuda.synchronize()
                samples.append(a.elapsed_time(b) / reps)
            return sorted(samples)[2]

        with torch.no_grad():
            f_ms = time_ms(fwd)
        fb_ms = time_ms(fwd_bwd)
        b_ms = fb_ms - f_ms
        ff = flops_fwd(Hq, Dh)
        out["shapes"][name] = {
            "fwd_ms": f_ms,
            "bwd_ms": b_ms,
            "fwd_tflops": ff / f_ms / 1e9,
            "bwd_tflops": 2.5 * ff / b_ms / 1e9,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1:] == ["--bench"]:
        bench()
    elif len(sys.argv) == 2:
        reference(sys.argv[1])
    else:
        sys.exit(__doc__)
