#!/usr/bin/env python3
"""PyTorch reference for the single-GPU training benchmark (issue 6): transformers'
Qwen2ForCausalLM from the Qwen2.5-0.5B / 1.5B shapes, random init, bf16 autocast over fp32
master weights, fused torch AdamW, sdpa attention, eager and torch.compile, 8192 tokens per
step. Run on the GPU machine:  python3 tests/bench/torch_reference.py [--out FILE]

The 8192 tokens are 4 sequences of 2048 (a [4, 2048] batch, causal per sequence): the same
attention work as a packed batch of 4 sequences, which sdpa cannot take without a dense mask.
Prints and writes JSON: tokens/s, step time, MFU (6 * params * tokens + attention FLOPs over
989 TFLOP/s dense bf16 on H100 SXM), peak memory.
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960),
}
PEAK_TFLOPS = 989.0
BATCH, SEQ = 4, 2048


def flops_per_step(cfg, n_params, tokens):
    # 6 N T for the weights, plus causal attention: fwd 2 matmuls of 2*S*S*Dh per head, halved
    # by the mask, times 3 for fwd+bwd.
    attn = 3 * 2 * 2 * BATCH * SEQ * SEQ * cfg.hidden_size * cfg.num_hidden_layers / 2
    return 6 * n_params * tokens + attn


def run(name, compile_mode, steps=12, warmup=4):
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, **SHAPES[name])
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").cuda().float()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    fwd = torch.compile(model) if compile_mode else model
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), device="cuda")
    torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fwd(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    tokens = BATCH * SEQ
    res = {
        "model": name,
        "mode": "compile" if compile_mode else "eager",
        "params": n_params,
        "tokens_per_step": tokens,
        "step_s": dt,
        "tokens_per_s": tokens / dt,
        "mfu": flops_per_step(cfg, n_params, tokens) / dt / (PEAK_TFLOPS * 1e12),
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
        "loss": float(loss),
    }
    print(json.dumps(res), flush=True)
    del model, opt, fwd
    torch.cuda.empty_cache()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/bench/results/torch_reference.json")
    ap.add_argument("--models", default=",".join(SHAPES))
    ap.add_argument("--modes", default="eager,compile")
    a = ap.parse_args()
    results = []
    for name in a.models.split(","):
        for mode in a.modes.split(","):
            results.append(run(name, mode == "compile"))
    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}
    import os
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
