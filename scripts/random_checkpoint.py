#!/usr/bin/python3
"""Writes a random-weight Hugging Face checkpoint of a real model shape to disk.

    /usr/bin/python3 scripts/random_checkpoint.py --shape llama-3.2-1b --out /tmp/llama1b

The folder holds config.json, model.safetensors (bf16 by default, N(0, 0.02) weights, norms
1.0) and tokenizer.json: the one given with --tokenizer (e.g. the Llama 3 tokenizer from
scripts/fetch-tokenizers.sh), else a byte-level BPE with no merges padded with reserved tokens
to the shape's vocabulary size (it round-trips any text, one token per byte). Weights' values
do not change speed, so such folders serve load-time, memory and throughput measurements of
the real loading path (mmap'd safetensors, compression on load) without downloads.
Shapes match engine/model/random_model.cc.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

# name: model_type, hidden, inter, layers, heads, kv_heads, vocab, ctx, rope_theta, tied, bias, llama3
SHAPES = {
    "tiny": ("llama", 64, 172, 2, 4, 2, 512, 256, 10000.0, True, False, False),
    "smollm2-135m": ("llama", 576, 1536, 30, 9, 3, 49152, 8192, 100000.0, True, False, False),
    "llama-3.2-1b": ("llama", 2048, 8192, 16, 32, 8, 128256, 131072, 500000.0, True, False, True),
    "llama-3.1-8b": ("llama", 4096, 14336, 32, 32, 8, 128256, 131072, 500000.0, False, False, True),
    "qwen2-0.5b": ("qwen2", 896, 4864, 24, 14, 2, 151936, 32768, 1000000.0, True, True, False),
}


def byte_level_chars():
    """GPT-2's byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def synthetic_tokenizer(vocab_size):
    chars = byte_level_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    added = []
    for i in range(256, vocab_size):
        tok = f"<|reserved_{i}|>"
        vocab[tok] = i
        added.append({"id": i, "content": tok, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    return {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }


def tensor_names(shape):
    mt, hidden, inter, layers, heads, kv, vocab, _, _, tied, bias, _ = shape
    hd = hidden // heads
    out = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (hidden,)),
                (p + "post_attention_layernorm.weight", (hidden,)),
                (p + "self_attn.q_proj.weight", (heads * hd, hidden)),
                (p + "self_attn.k_proj.weight", (kv * hd, hidden)),
                (p + "self_attn.v_proj.weight", (kv * hd, hidden)),
                (p + "self_attn.o_proj.weight", (hidden, heads * hd)),
                (p + "mlp.gate_proj.weight", (inter, hidden)),
                (p + "mlp.up_proj.weight", (inter, hidden)),
                (p + "mlp.down_proj.weight", (hidden, inter))]
        if bias:
            out += [(p + "self_attn.q_proj.bias", (heads * hd,)),
                    (p + "self_attn.k_proj.bias", (kv * hd,)),
                    (p + "self_attn.v_proj.bias", (kv * hd,))]
    out.append(("model.norm.weight", (hidden,)))
    if not tied:
        out.append(("lm_head.weight", (vocab, hidden)))
    return out


def to_bf16(a):
    return (a.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--tokenizer", help="tokenizer.json to copy (default: synthetic byte-level)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    mt, hidden, inter, layers, heads, kv, vocab, ctx, theta, tied, bias, llama3 = shape
    os.makedirs(args.out, exist_ok=True)
    cfg = {
        "architectures": ["Qwen2ForCausalLM" if mt == "qwen2" else "LlamaForCausalLM"],
        "model_type": mt, "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv,
        "vocab_size": vocab, "max_position_embeddings": ctx, "rms_norm_eps": 1e-5,
        "rope_theta": theta, "hidden_act": "silu", "tie_word_embeddings": tied,
        "bos_token_id": 1 if args.tokenizer is None else None, "eos_token_id": 2,
        "torch_dtype": {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[args.dtype],
    }
    if cfg["bos_token_id"] is None:
        del cfg["bos_token_id"]
    if llama3:
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    if mt == "qwen2":
        cfg["attention_bias"] = True
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    if args.tokenizer:
        with open(args.tokenizer, "rb") as src, open(os.path.join(args.out, "tokenizer.json"), "wb") as dst:
            dst.write(src.read())
    else:
        with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
            json.dump(synthetic_tokenizer(vocab), f)

    st_dtype, size = {"bf16": ("BF16", 2), "f16": ("F16", 2), "f32": ("F32", 4)}[args.dtype]
    names = tensor_names(shape)
    header, off = {}, 0
    for name, shp in names:
        n = int(np.prod(shp)) * size
        header[name] = {"dtype": st_dtype, "shape": list(shp), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt", "generator": "compressd scripts/random_checkpoint.py"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    rng = np.random.default_rng(args.seed)
    path = os.path.join(args.out, "model.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for i, (name, shp) in enumerate(names):
            rows = shp[0]
            step = max(1, (1 << 24) // max(1, int(np.prod(shp[1:])) if len(shp) > 1 else 1))
            for r0 in range(0, rows, step):  # in slices: bounded memory for 8B shapes
                part = (min(step, rows - r0),) + tuple(shp[1:])
                if name.endswith("norm.weight"):
                    a = np.ones(part, np.float32)
                elif name.endswith(".bias"):
                    a = rng.standard_normal(part, np.float32) * 0.01
                else:
                    a = rng.standard_normal(part, np.float32) * 0.02
                if args.dtype == "bf16":
                    f.write(to_bf16(a).tobytes())
                elif args.dtype == "f16":
                    f.write(a.astype(np.float16).tobytes())
                else:
                    f.write(a.tobytes())
            print(f"\r[random_checkpoint] tensor {i + 1}/{len(names)}", end="", file=sys.stderr)
    print(f"\n{path}: {off / 1e9:.2f} GB of {st_dtype} weights", file=sys.stderr)


if __name__ == "__main__":
    main()
