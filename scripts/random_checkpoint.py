#!/usr/bin/python3
"""Writes a random-weight Hugging Face checkpoint of a real model shape to disk.

    /usr/bin/python3 scripts/random_checkpoint.py --shape llama-3.2-1b --out /tmp/llama1b
    /usr/bin/python3 scripts/random_checkpoint.py --shape llama-3.2-1b --gguf q4_0 --out /tmp/l1b-q4_0.gguf

The folder holds config.json, model.safetensors (bf16 by default, N(0, 0.02) weights, norms
1.0) and tokenizer.json: the one given with --tokenizer (e.g. the Llama 3 tokenizer from
scripts/fetch-tokenizers.sh), else a byte-level BPE with no merges padded with reserved tokens
to the shape's vocabulary size (it round-trips any text, one token per byte). Weights' values
do not change speed, so such folders serve load-time, memory and throughput measurements of
the real loading path (mmap'd safetensors, compression on load) without downloads.
Shapes match engine/model/random_model.cc.

With --gguf TYPE (f16, q8_0, q4_0) it writes one GGUF v3 file instead (llama.cpp's tensor names,
norms in F32, every matrix incl. the embedding in TYPE, the same synthetic vocabulary as a
"gpt2" tokenizer), so `compressd bench --model FILE.gguf` times the GGUF block formats of a
real shape, the same file llama.cpp's llama-bench would run.
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


# --- GGUF v3 (format: github.com/ggml-org/ggml docs/gguf.md) ---------------------------------
GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STR, GGUF_ARR = 4, 5, 6, 7, 8, 9
GGML_TYPES = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q8_0": (8, 32, 34)}


def gguf_str(v):
    b = v.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_kv(key, typ, value, elem=None):
    out = gguf_str(key) + struct.pack("<I", typ)
    if typ == GGUF_ARR:
        out += struct.pack("<IQ", elem, len(value))
        if elem == GGUF_STR:
            out += b"".join(gguf_str(x) for x in value)
        else:
            out += np.asarray(value, {GGUF_I32: "<i4", GGUF_F32: "<f4", GGUF_U32: "<u4"}[elem]).tobytes()
    elif typ == GGUF_STR:
        out += gguf_str(value)
    else:
        out += struct.pack({GGUF_U32: "<I", GGUF_I32: "<i", GGUF_F32: "<f", GGUF_BOOL: "<?"}[typ], value)
    return out


def quantize_blocks(a, typ):
    """a: float32 rows whose length is a multiple of 32 -> GGUF block bytes."""
    x = a.reshape(-1, 32).astype(np.float32)
    if typ == "q8_0":
        amax = np.abs(x).max(axis=1)
        d = amax / 127.0
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0).astype(np.float32)
        q = np.clip(np.rint(x * inv[:, None]), -127, 127).astype(np.int8)
        return np.concatenate([d.astype(np.float16)[:, None].view(np.uint8), q.view(np.uint8)],
                              axis=1).tobytes()
    # q4_0: d = (the value of largest magnitude) / -8, codes floor(x / d + 8.5) in [0, 15];
    # byte j of a block holds code j (low nibble) and code j + 16 (high nibble).
    idx = np.abs(x).argmax(axis=1)
    m = x[np.arange(x.shape[0]), idx]
    d = m / -8.0
    inv = np.where(d != 0, 1.0 / np.where(d != 0, d, 1.0), 0.0).astype(np.float32)
    q = np.clip(np.floor(x * inv[:, None] + 8.5), 0, 15).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    return np.concatenate([d.astype(np.float16)[:, None].view(np.uint8), packed], axis=1).tobytes()


def gguf_name(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    layer, rest = hf[len("model.layers."):].split(".", 1)
    return f"blk.{layer}." + {
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight", "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight"}[rest]


def write_gguf(args, shape):
    mt, hidden, inter, layers, heads, kv, vocab, ctx, theta, tied, bias, llama3 = shape
    if mt != "llama":
        sys.exit("--gguf: only llama shapes")
    a = mt + "."
    kvs = [gguf_kv("general.architecture", GGUF_STR, mt),
           gguf_kv("general.name", GGUF_STR, f"random {args.shape} ({args.gguf})"),
           gguf_kv(a + "context_length", GGUF_U32, min(ctx, 8192)),
           gguf_kv(a + "embedding_length", GGUF_U32, hidden),
           gguf_kv(a + "block_count", GGUF_U32, layers),
           gguf_kv(a + "feed_forward_length", GGUF_U32, inter),
           gguf_kv(a + "attention.head_count", GGUF_U32, heads),
           gguf_kv(a + "attention.head_count_kv", GGUF_U32, kv),
           gguf_kv(a + "rope.freq_base", GGUF_F32, theta),
           gguf_kv(a + "attention.layer_norm_rms_epsilon", GGUF_F32, 1e-5)]
    # Bytes, BOS/EOS, a few merges (a gpt2 vocabulary needs some), then reserved tokens.
    merges = ["t h", "i n", "e r", "a n"]
    tokens = byte_level_chars() + ["<|bos|>", "<|eos|>"] + [m.replace(" ", "") for m in merges]
    types = [1] * 256 + [3, 3] + [1] * len(merges)
    tokens += [f"<|reserved_{i}|>" for i in range(len(tokens), vocab)]
    types += [3] * (vocab - len(types))
    kvs += [gguf_kv("tokenizer.ggml.model", GGUF_STR, "gpt2"),
            gguf_kv("tokenizer.ggml.tokens", GGUF_ARR, tokens, GGUF_STR),
            gguf_kv("tokenizer.ggml.token_type", GGUF_ARR, types, GGUF_I32),
            gguf_kv("tokenizer.ggml.merges", GGUF_ARR, merges, GGUF_STR),
            gguf_kv("tokenizer.ggml.bos_token_id", GGUF_U32, 256),
            gguf_kv("tokenizer.ggml.eos_token_id", GGUF_U32, 257)]
    infos, off, plan = [], 0, []
    for name, shp in tensor_names(shape):
        typ = "f32" if len(shp) == 1 else args.gguf
        if typ in ("q4_0", "q8_0") and shp[-1] % 32:
            typ = "f16"  # rows must be whole 32-value blocks (as llama.cpp falls back too)
        code, blk, bsize = GGML_TYPES[typ]
        n = int(np.prod(shp))
        nbytes = n // blk * bsize
        dims = list(reversed(shp))  # GGUF stores the innermost dimension first
        infos.append(gguf_str(gguf_name(name)) + struct.pack("<I", len(dims)) +
                     b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", code, off))
        plan.append((name, shp, typ))
        off += (nbytes + 31) // 32 * 32
    head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += b"\0" * ((32 - len(head) % 32) % 32)
    rng = np.random.default_rng(args.seed)
    with open(args.out, "wb") as f:
        f.write(head)
        for i, (name, shp, typ) in enumerate(plan):
            rows = shp[0]
            cols = int(np.prod(shp[1:])) if len(shp) > 1 else 1
            step = max(1, (1 << 24) // cols)
            written = 0
            for r0 in range(0, rows, step):
                part = (min(step, rows - r0),) + tuple(shp[1:])
                if name.endswith("norm.weight"):
                    x = np.ones(part, np.float32)
                else:
                    x = rng.standard_normal(part, np.float32) * 0.02
                if typ == "f32":
                    b = x.tobytes()
                elif typ == "f16":
                    b = x.astype(np.float16).tobytes()
                else:
                    b = quantize_blocks(x, typ)
                f.write(b)
                written += len(b)
            f.write(b"\0" * ((32 - written % 32) % 32))
            print(f"\r[random_checkpoint] tensor {i + 1}/{len(plan)}", end="", file=sys.stderr)
    print(f"\n{args.out}: {off / 1e9:.2f} GB of tensors ({args.gguf})", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--tokenizer", help="tokenizer.json to copy (default: synthetic byte-level)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--gguf", choices=["f16", "q8_0", "q4_0"],
                    help="write one GGUF file (--out FILE.gguf) with matrices in this type")
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    if args.gguf:
        write_gguf(args, shape)
        return
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
