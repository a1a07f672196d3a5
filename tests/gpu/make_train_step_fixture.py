#!/usr/bin/env python3
"""The transformers reference for tests/gpu/train-step.test.ts: a small Qwen2 (head dim 64, the
size the CUDA attention serves; q/k/v bias, GQA 4:2, untied head) with larger-than-init random
weights, a packed batch of sequences (one of length 1), and transformers' float32 loss and
every parameter's gradient, each sequence run alone (no cross-sequence attention).

    python3 tests/gpu/make_train_step_fixture.py OUT_DIR

writes OUT_DIR/{config.json, model.safetensors, reference.safetensors, reference.json}.
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures" / "models"))
from make_fixtures import randomize  # noqa: E402

VOCAB = 512
SEQ_LENS = [37, 1, 90, 64]


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        use_sliding_window=False,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").to(torch.float32)
    randomize(model, 7)
    # randomize's scale suits 32-wide models; at 256 wide it would saturate the softmax.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(0.25)
    model.eval()

    g = torch.Generator().manual_seed(8)
    tokens, positions, labels, cu = [], [], [], [0]
    for n in SEQ_LENS:
        seq = torch.randint(0, VOCAB, (n,), generator=g)
        tokens.append(seq)
        labels.append(torch.cat([seq[1:], torch.tensor([-100])]))
        positions.append(torch.arange(n))
        cu.append(cu[-1] + n)
    tokens, labels, positions = torch.cat(tokens), torch.cat(labels), torch.cat(positions)

    model.zero_grad(set_to_none=True)
    logits = torch.cat([
        model(input_ids=tokens[s:e][None], position_ids=positions[s:e][None], use_cache=False).logits[0]
        for s, e in zip(cu[:-1], cu[1:])
    ])
    count = int((labels != -100).sum())
    loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / count
    loss.backward()

    model.save_pretrained(str(out))
    ref = {
        "tokens": tokens.to(torch.int32),
        "positions": positions.to(torch.int32),
        "cu_seqlens": torch.tensor(cu, dtype=torch.int32),
        "labels": labels.to(torch.int32),
    }
    names = []
    for name, p in model.named_parameters():
        ref["grad." + name] = p.grad.detach().float().contiguous()
        names.append(name)
    save_file(ref, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(json.dumps({"loss": loss.item(), "count": count, "parameters": names}))
    print(f"train-step fixture: loss {loss.item():.6f} over {count} tokens in {out}")


if __name__ == "__main__":
    main()
