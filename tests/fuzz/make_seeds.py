#!/usr/bin/env python3
"""Writes the small hand-made seed corpora committed under tests/fuzz/corpus/<target>/.

Run once (python3 tests/fuzz/make_seeds.py); the outputs are committed. Real files from
../shared are copied at run time by scripts/fuzz.sh and never committed.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- safetensors ------------------------------------------------------------------
def safetensors(tensors, metadata=None, pad_to=8):
    header, blob = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % pad_to)
    return struct.pack("<Q", len(h)) + h + blob


put("safetensors", "two_f32.safetensors", safetensors([
    ("model.embed_tokens.weight", "F32", [4, 2], struct.pack("<8f", *range(8))),
    ("model.norm.weight", "F32", [2], struct.pack("<2f", 1, 1))], {"format": "pt"}))
put("safetensors", "dtypes.safetensors", safetensors([
    ("a", "F16", [2, 2], b"\x00\x3c" * 4), ("b", "BF16", [3], b"\x80\x3f" * 3),
    ("c", "I8", [4], b"\x01\x02\x03\x04"), ("d", "U8", [1, 1, 2], b"\xff\x00"),
    ("e", "I32", [1], b"\x07\x00\x00\x00"), ("f", "F64", [1], struct.pack("<d", 2.5)),
    ("g", "BOOL", [2], b"\x01\x00"), ("scalar", "F32", [], struct.pack("<f", 3.0)),
    ("empty", "F32", [0, 4], b"")]))
put("safetensors", "empty_header.safetensors", safetensors([]))
put("safetensors", "metadata_only.safetensors", safetensors([], {"a": "b", "compressd": "{}"}))

# ---- GGUF -------------------------------------------------------------------------
GT = dict(u8=0, i8=1, u16=2, i16=3, u32=4, i32=5, f32=6, bool=7, str=8, arr=9, u64=10,
          i64=11, f64=12)
FMT = dict(u8="<B", i8="<b", u16="<H", i16="<h", u32="<I", i32="<i", f32="<f", bool="<?",
           u64="<Q", i64="<q", f64="<d")


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == "str":
        return gstr(v)
    if t.startswith("arr:"):
        et = t[4:]
        out = struct.pack("<IQ", GT[et], len(v))
        for x in v:
            out += gval(et, x)
        return out
    return struct.pack(FMT[t], v)


def gguf(kvs, tensors, version=3, align=32):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", GT["arr"] if t.startswith("arr:") else GT[t])
        out += gval(t, v)
    data, infos = b"", b""
    for name, ggml_type, dims, raw in tensors:
        data += b"\x00" * (-len(data) % align)
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(
            struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, len(data))
        data += raw
    out += infos
    out += b"\x00" * (-len(out) % align)
    return out + data


F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8
every_type = [("u8", "u8", 1), ("i8", "i8", -1), ("u16", "u16", 2), ("i16", "i16", -2),
              ("u32", "u32", 3), ("i32", "i32", -3), ("f32", "f32", 0.5), ("b", "bool", True),
              ("s", "str", "hello"), ("u64", "u64", 4), ("i64", "i64", -4), ("f64", "f64", 1.5),
              ("ai", "arr:i32", [1, 2, 3]), ("af", "arr:f32", [0.5, 1.5]),
              ("as", "arr:str", ["a", "bc"]), ("ab", "arr:bool", [True, False])]
put("gguf", "every_type.gguf", gguf(every_type, [
    ("t.f32", F32, [4, 2], struct.pack("<8f", *range(8))),
    ("t.f16", F16, [4], b"\x00\x3c" * 4),
    ("t.q8_0", Q8_0, [32], b"\x00\x3c" + bytes(range(32))),
    ("t.q4_0", Q4_0, [32, 2], (b"\x00\x3c" + bytes(range(16))) * 2)]))
put("gguf", "v2_empty.gguf", gguf([], [], version=2))
put("gguf", "align64.gguf", gguf([("general.alignment", "u32", 64)],
                                  [("x", F32, [3], struct.pack("<3f", 1, 2, 3))], align=64))

spm_tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + [
    "\u2581", "\u2581t", "he", "\u2581the", "a", "b"]
spm_vocab = [("tokenizer.ggml.model", "str", "llama"),
             ("tokenizer.ggml.tokens", "arr:str", spm_tokens),
             ("tokenizer.ggml.scores", "arr:f32", [0.0] * 3 + [0.0] * 256 + [-1, -2, -3, -4, -5, -6]),
             ("tokenizer.ggml.token_type", "arr:i32", [2, 3, 3] + [6] * 256 + [1] * 6),
             ("tokenizer.ggml.bos_token_id", "u32", 1), ("tokenizer.ggml.eos_token_id", "u32", 2),
             ("tokenizer.ggml.unknown_token_id", "u32", 0),
             ("tokenizer.ggml.add_bos_token", "bool", True),
             ("tokenizer.chat_template", "str", "{% for m in messages %}{{ m['content'] }}{% endfor %}")]
put("gguf", "vocab_spm.gguf", gguf(spm_vocab, []))
bl_tokens = [chr(c) for c in range(0x21, 0x7f)] + ["\u0120", "\u0120t", "he", "<|endoftext|>"]
put("gguf", "vocab_gpt2.gguf", gguf([
    ("tokenizer.ggml.model", "str", "gpt2"), ("tokenizer.ggml.pre", "str", "gpt2"),
    ("tokenizer.ggml.tokens", "arr:str", bl_tokens),
    ("tokenizer.ggml.token_type", "arr:i32", [1] * (len(bl_tokens) - 1) + [3]),
    ("tokenizer.ggml.merges", "arr:str", ["\u0120 t", "h e"]),
    ("tokenizer.ggml.bos_token_id", "u32", len(bl_tokens) - 1),
    ("tokenizer.ggml.eos_token_id", "u32", len(bl_tokens) - 1)], []))

# A tiny llama: hidden 32, 2 heads, ff 64, 1 layer, vocab 8 (f32 weights).
H, FF, V = 32, 64, 8
def f32s(n):
    return struct.pack("<%df" % n, *([0.01] * n))
llama = [("general.architecture", "str", "llama"), ("llama.context_length", "u32", 64),
         ("llama.embedding_length", "u32", H), ("llama.block_count", "u32", 1),
         ("llama.feed_forward_length", "u32", FF), ("llama.attention.head_count", "u32", 2),
         ("llama.attention.head_count_kv", "u32", 1), ("llama.rope.dimension_count", "u32", 16),
         ("llama.attention.layer_norm_rms_epsilon", "f32", 1e-5),
         ("llama.rope.freq_base", "f32", 10000.0)]
lt = [("token_embd.weight", F32, [H, V], f32s(H * V)), ("output_norm.weight", F32, [H], f32s(H)),
      ("blk.0.attn_norm.weight", F32, [H], f32s(H)), ("blk.0.ffn_norm.weight", F32, [H], f32s(H)),
      ("blk.0.attn_q.weight", F32, [H, H], f32s(H * H)),
      ("blk.0.attn_k.weight", F32, [H, 16], f32s(H * 16)),
      ("blk.0.attn_v.weight", F32, [H, 16], f32s(H * 16)),
      ("blk.0.attn_output.weight", F32, [H, H], f32s(H * H)),
      ("blk.0.ffn_gate.weight", F32, [H, FF], f32s(H * FF)),
      ("blk.0.ffn_up.weight", F32, [H, FF], f32s(H * FF)),
      ("blk.0.ffn_down.weight", F32, [FF, H], f32s(H * FF))]
put("gguf", "llama_tiny.gguf", gguf(llama, lt))

# ---- config.json ------------------------------------------------------------------
base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 8,
        "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
put("config", "llama.json", json.dumps(base, indent=1))
put("config", "llama3_rope.json", json.dumps(dict(base, rope_scaling={
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192}, eos_token_id=[2, 3], head_dim=8)))
put("config", "qwen2.json", json.dumps(dict(base, architectures=["Qwen2ForCausalLM"],
    model_type="qwen2", attention_bias=True, sliding_window=4096, use_sliding_window=False)))
put("config", "mistral_linear.json", json.dumps(dict(base, architectures=["MistralForCausalLM"],
    model_type="mistral", rope_scaling={"type": "linear", "factor": 2.0}, sliding_window=None)))

# ---- tokenizer.json ---------------------------------------------------------------
tk = os.path.join(CORPUS, "tokenizers")
for f in ("spm_tiny.json", "bytelevel_tiny.json"):
    with open(os.path.join(tk, f), "rb") as fh:
        put("tokenizer_json", f, fh.read())
with open(os.path.join(tk, "spm_tiny.json"), "rb") as fh:
    with open(os.path.join(tk, "spm_tiny_config.json"), "rb") as cf:
        put("tokenizer_json", "spm_tiny_with_config", fh.read() + b"\n#CONFIG#\n" + cf.read())

# ---- tokenizer encode (byte 0 = mode) ---------------------------------------------
texts = [b"Once upon a time, there was a little girl.", b"Hello world! 123 <s> </s>",
         "caf\u00e9 \u2581 \u00e9\u00e8 \U0001F600 \u4e2d\u6587\n\t  x".encode(),
         b"<|endoftext|>a<|endoftext|>", b"\xff\xfe\xc3", b"   leading and trailing   "]
for i, t in enumerate(texts):
    for mode in (0, 1, 6, 7):
        put("tokenizer_encode", "t%d_m%d" % (i, mode), bytes([mode]) + t)
put("tokenizer_encode", "ids_spm", bytes([8]) + struct.pack("<6i", 1, 300, 3, 259, -1, 99999))
put("tokenizer_encode", "ids_bl", bytes([9]) + struct.pack("<5i", 0, 50256, 220, 32, 1 << 30))

# ---- chat templates ---------------------------------------------------------------
put("chat_template", "chatml.jinja",
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")
put("chat_template", "llama2.jinja",
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + "
    "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}"
    "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
put("chat_template", "features.jinja",
    "{%- set ns = namespace(n=0) -%}{% for m in messages if m.role != 'x' %}"
    "{{ loop.index }}/{{ loop.length }}{{ m.content | trim | upper | length }}"
    "{{ m | tojson }}{% if m.role in ['user', 'system'] %}U{% elif not m.content %}E"
    "{% else %}{{ m['content'][:3] ~ '...' }}{% endif %}{% set ns.n = ns.n + 1 %}"
    "{% endfor %}{{ ns.n * 2 - 1 }}{{ messages | length > 2 and true or false }}"
    "{{ 'a,b'.split(',') | join('-') }}{# comment #}")
put("chat_template", "with_content", "{{ messages[1].content }}\n#MSG#\n{{ 'inject' }}")

# ---- GenerateRequest protobuf bytes -----------------------------------------------
def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def fld(num, wt, payload):
    tag = varint((num << 3) | wt)
    if wt == 0:
        return tag + varint(payload)
    if wt == 2:
        return tag + varint(len(payload)) + payload
    if wt == 5:
        return tag + struct.pack("<f", payload)
    raise ValueError(wt)


def packed(num, vals):
    return fld(num, 2, b"".join(varint(v) for v in vals))


sampling = (fld(1, 5, 0.7) + fld(2, 0, 40) + fld(3, 5, 0.9) + fld(4, 5, 0.05) +
            fld(5, 5, 1.1) + fld(6, 5, 0.5) + fld(7, 5, -0.5) + fld(8, 0, 1234))
put("validation", "prompt", fld(1, 2, b"Once upon a time") + fld(5, 0, 16) + fld(6, 2, sampling))
put("validation", "tokens", fld(2, 2, packed(1, [1, 2, 3, 400])) + fld(5, 0, 8) +
    fld(7, 2, b"\n\n") + packed(8, [2]) + fld(9, 0, 1) + fld(10, 0, 1) + fld(11, 0, 5) +
    fld(12, 0, 50) + fld(13, 2, b"req-1") + fld(14, 0, 0))
put("validation", "flat_ids", packed(4, [1, 5, 9]) + fld(5, 0, 0))
msg = lambda r, c: fld(1, 2, fld(1, 2, r) + fld(2, 2, c))
put("validation", "chat", fld(3, 2, msg(b"system", b"Be brief.") + msg(b"user", b"Hi") +
                               fld(2, 0, 1)) + fld(5, 0, 32))
put("validation", "bad_sampling", fld(1, 2, b"x") + fld(6, 2, fld(1, 5, float("nan")) +
                                                        fld(2, 0, 1 << 31)) + fld(12, 0, (1 << 64) - 5))
# ---- KV codec specs (byte 0: geometry) ------------------------------------------------
for gi, spec in enumerate(["int4", "int8:g16", "int2:k4", "int4:noclip", "gear+int4:r2:o3",
                           "mikv:h4:l2:f45", "ems+int4:f50:uniform", "cskv:r16+int4",
                           "cskv:r24+mikv:h4:l2:f45", "minicache:t45:r25+int4:g32",
                           "minicache:r0", "fp16", "bf16", "ems:f30:nomerge"]):
    put("kv_codec", f"seed{gi:02d}", bytes([gi % 4]) + spec.encode())

# ---- compression recipes ----------------------------------------------------------
put("recipe", "json_rules.json", json.dumps({"default": "int4-g64+gptq", "rules": [
    {"match": "lm_head.weight", "format": "int8"},
    {"match": "model.layers.*.mlp.down_proj.weight", "format": "int4-g32"}]}))
put("recipe", "yaml_rules.yaml", 'name: mixed\ndefault: int8\nrules:\n  - match: "model.layers.[0-3].*"\n'
    '    format: int4-g128\n  - match: lm_head.weight\n    format: bf16\n')
put("recipe", "budget.json", json.dumps({"budget": "600MB", "candidates": ["int4-g64", "int8", "bf16"]}))
print("seeds written under", CORPUS)
