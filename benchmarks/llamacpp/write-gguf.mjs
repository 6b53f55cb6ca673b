// Writes a GGUF (version 3) file for llama.cpp from a Llama-shaped F32/F16/BF16 safetensors checkpoint (our scoring benchmark
// model: config.json + model.safetensors), with every matrix stored as F32, F16 or Q8_0 and the norms as F32.
//
//   node write-gguf.mjs MODEL_DIR OUT.gguf f32|f16|q8_0
//
// Written from the GGUF specification (ggml's docs/gguf.md): header, metadata key/values, tensor infos, data aligned to
// general.alignment (32). Tensor dims are ggml's ne[] (innermost first), so an [N, K] weight is written as [K, N]. The q and k
// projections are permuted from Hugging Face's rotate-half RoPE layout to llama.cpp's interleaved-pair layout, as llama.cpp's
// own converter does. Q8_0 follows ggml's reference quantizer: blocks of 32 values along K, d = max|x| / 127 stored as f16,
// q = round(x / d) (half away from zero). The vocabulary is synthetic (the model is random and the benchmark feeds token ids):
// <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then placeholder pieces, as many as config.vocab_size.
// Writes OUT.gguf.tmp and renames it, so a failed run never leaves a half-written OUT.gguf.
import fs from "node:fs";
import path from "node:path";

const [dir, out, kind] = process.argv.slice(2);
const fail = (msg) => { console.error(`write-gguf: ${msg}`); process.exit(2); };
if (!dir || !out || !["f32", "f16", "q8_0"].includes(kind ?? "")) fail("usage: node write-gguf.mjs MODEL_DIR OUT.gguf f32|f16|q8_0");

const config = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
const stPath = path.join(dir, "model.safetensors");
const st = fs.openSync(stPath, "r");
const lenBuf = Buffer.alloc(8);
fs.readSync(st, lenBuf, 0, 8, 0);
const headerLen = Number(lenBuf.readBigUInt64LE(0));
const hdrBuf = Buffer.alloc(headerLen);
fs.readSync(st, hdrBuf, 0, headerLen, 8);
const header = JSON.parse(hdrBuf.toString("utf8"));
const dataStart = 8 + headerLen;

const H = config.hidden_size, L = config.num_hidden_layers, nHead = config.num_attention_heads;
const nKv = config.num_key_value_heads ?? nHead, D = config.head_dim ?? H / nHead, V = config.vocab_size;

// ggml types and GGUF value types.
const GGML = { f32: 0, f16: 1, q8_0: 8 };
const FILE_TYPE = { f32: 0, f16: 1, q8_0: 7 };
const T = { U32: 4, I32: 5, F32: 6, STRING: 8, ARRAY: 9 };
const ALIGN = 32;

// ---- f32 -> f16 (round to nearest even), bit-exact with ggml's FP32_TO_FP16 on finite values.
const f32buf = new Float32Array(1), u32buf = new Uint32Array(f32buf.buffer);
function toHalf(x) {
  f32buf[0] = x;
  const b = u32buf[0], sign = (b >>> 16) & 0x8000, exp = (b >>> 23) & 0xff, man = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = man | 0x800000, shift = 14 - e, half = 1 << (shift - 1);
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (man >>> 13);
  const rem = man & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++;
  return sign | r;
}
function fromHalf(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >>> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

// ---- reading a tensor as f32
function readF32(name) {
  const info = header[name];
  if (!info) fail(`${stPath}: tensor ${name} is missing`);
  const [a, b] = info.data_offsets, n = info.shape.reduce((x, y) => x * y, 1);
  const raw = Buffer.alloc(b - a);
  for (let done = 0; done < raw.length;) done += fs.readSync(st, raw, done, Math.min(1 << 30, raw.length - done), dataStart + a + done);
  const out = new Float32Array(n);
  if (info.dtype === "F32") out.set(new Float32Array(raw.buffer, raw.byteOffset, n));
  else if (info.dtype === "F16") { const h = new Uint16Array(raw.buffer, raw.byteOffset, n); for (let i = 0; i < n; i++) out[i] = fromHalf(h[i]); }
  else if (info.dtype === "BF16") { const h = new Uint16Array(raw.buffer, raw.byteOffset, n), u = new Uint32Array(out.buffer); for (let i = 0; i < n; i++) u[i] = h[i] << 16; }
  else fail(`${stPath}: tensor ${name} has dtype ${info.dtype}; F32, F16 or BF16 expected`);
  return { data: out, shape: info.shape };
}

// Hugging Face rotate-half q/k rows -> llama.cpp interleaved pairs: row h·D + 2j + i takes row h·D + i·D/2 + j.
function permuteRows(w, heads, cols) {
  const out = new Float32Array(w.length), d = w.length / cols / heads;
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < 2; i++)
      for (let j = 0; j < d / 2; j++) {
        const src = (h * d + i * (d / 2) + j) * cols, dst = (h * d + 2 * j + i) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
  return out;
}

function encode(data, type) {
  if (type === "f32") return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (type === "f16") { const h = new Uint16Array(data.length); for (let i = 0; i < data.length; i++) h[i] = toHalf(data[i]); return Buffer.from(h.buffer); }
  // q8_0: 34-byte blocks (f16 d, 32 × int8)
  const nb = data.length / 32, buf = Buffer.alloc(nb * 34);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(data[b * 32 + j]));
    const d = Math.fround(amax / 127), id = d ? Math.fround(1 / d) : 0;
    buf.writeUInt16LE(toHalf(d), b * 34);
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(data[b * 32 + j] * id);
      buf.writeInt8(Math.sign(v) * Math.round(Math.abs(v)), b * 34 + 2 + j);
    }
  }
  return buf;
}

// ---- the tensor list: [gguf name, safetensors name, kind: "norm" | "mat" | "q" | "k"]
const tensors = [["token_embd.weight", "model.embed_tokens.weight", "mat"]];
for (let l = 0; l < L; l++) {
  const p = `model.layers.${l}.`, q = `blk.${l}.`;
  tensors.push([q + "attn_norm.weight", p + "input_layernorm.weight", "norm"],
    [q + "attn_q.weight", p + "self_attn.q_proj.weight", "q"], [q + "attn_k.weight", p + "self_attn.k_proj.weight", "k"],
    [q + "attn_v.weight", p + "self_attn.v_proj.weight", "mat"], [q + "attn_output.weight", p + "self_attn.o_proj.weight", "mat"],
    [q + "ffn_norm.weight", p + "post_attention_layernorm.weight", "norm"],
    [q + "ffn_gate.weight", p + "mlp.gate_proj.weight", "mat"], [q + "ffn_up.weight", p + "mlp.up_proj.weight", "mat"],
    [q + "ffn_down.weight", p + "mlp.down_proj.weight", "mat"]);
}
tensors.push(["output_norm.weight", "model.norm.weight", "norm"]);
tensors.push(["output.weight", config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", "mat"]);

const typeOf = (k) => (k === "norm" ? "f32" : kind);
const bytesOf = (shape, type) => {
  const n = shape.reduce((x, y) => x * y, 1);
  if (type === "q8_0" && shape[shape.length - 1] % 32) fail(`Q8_0 needs rows that are a multiple of 32 long; shape [${shape}]`);
  return type === "f32" ? 4 * n : type === "f16" ? 2 * n : (n / 32) * 34;
};

// ---- header + metadata
const parts = [];
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
const i32 = (v) => { const b = Buffer.alloc(4); b.writeInt32LE(v); return b; };
const f32 = (v) => { const b = Buffer.alloc(4); b.writeFloatLE(v); return b; };
const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; };
const str = (s) => { const b = Buffer.from(s, "utf8"); return Buffer.concat([u64(b.length), b]); };
const kv = [];
const put = (key, type, value) => kv.push(Buffer.concat([str(key), u32(type), value]));
const arr = (elemType, items, enc) => Buffer.concat([u32(elemType), u64(items.length), ...items.map(enc)]);

put("general.architecture", T.STRING, str("llama"));
put("general.name", T.STRING, str(`rellax scoring benchmark (${kind})`));
put("general.alignment", T.U32, u32(ALIGN));
put("general.file_type", T.U32, u32(FILE_TYPE[kind]));
put("llama.context_length", T.U32, u32(config.max_position_embeddings));
put("llama.embedding_length", T.U32, u32(H));
put("llama.block_count", T.U32, u32(L));
put("llama.feed_forward_length", T.U32, u32(config.intermediate_size));
put("llama.rope.dimension_count", T.U32, u32(D));
put("llama.attention.head_count", T.U32, u32(nHead));
put("llama.attention.head_count_kv", T.U32, u32(nKv));
put("llama.attention.layer_norm_rms_epsilon", T.F32, f32(config.rms_norm_eps));
put("llama.rope.freq_base", T.F32, f32(config.rope_theta ?? 10000));
put("llama.vocab_size", T.U32, u32(V));
const tokens = [], scores = [], types = [];
for (let i = 0; i < V; i++) {
  if (i < 3) { tokens.push(["<unk>", "<s>", "</s>"][i]); types.push(i === 0 ? 2 : 3); }
  else if (i < 259) { tokens.push(`<0x${(i - 3).toString(16).toUpperCase().padStart(2, "0")}>`); types.push(6); }
  else { tokens.push(`\u2581t${i}`); types.push(1); }
  scores.push(-i);
}
put("tokenizer.ggml.model", T.STRING, str("llama"));
put("tokenizer.ggml.tokens", T.ARRAY, arr(T.STRING, tokens, str));
put("tokenizer.ggml.scores", T.ARRAY, arr(T.F32, scores, f32));
put("tokenizer.ggml.token_type", T.ARRAY, arr(T.I32, types, i32));
put("tokenizer.ggml.unknown_token_id", T.U32, u32(0));
put("tokenizer.ggml.bos_token_id", T.U32, u32(config.bos_token_id ?? 1));
put("tokenizer.ggml.eos_token_id", T.U32, u32(config.eos_token_id ?? 2));
put("tokenizer.ggml.add_bos_token", 7, Buffer.from([1]));

const infos = [];
let offset = 0;
for (const [name, src, k] of tensors) {
  const shape = header[src]?.shape ?? fail(`${stPath}: tensor ${src} is missing`);
  const type = typeOf(k);
  const dims = [...shape].reverse();
  infos.push(Buffer.concat([str(name), u32(dims.length), ...dims.map(u64), u32(GGML[type]), u64(offset)]));
  offset += bytesOf(shape, type);
  offset = Math.ceil(offset / ALIGN) * ALIGN;
}
parts.push(Buffer.from("GGUF", "ascii"), u32(3), u64(tensors.length), u64(kv.length), ...kv, ...infos);
let head = Buffer.concat(parts);
head = Buffer.concat([head, Buffer.alloc((ALIGN - (head.length % ALIGN)) % ALIGN)]);

const tmp = out + ".tmp";
const fd = fs.openSync(tmp, "w");
try {
  let pos = 0;
  const write = (b) => { for (let done = 0; done < b.length;) done += fs.writeSync(fd, b, done, b.length - done, pos + done); pos += b.length; };
  write(head);
  const dataBase = pos;
  for (const [name, src, k] of tensors) {
    let { data, shape } = readF32(src);
    if (k === "q") data = permuteRows(data, nHead, shape[1]);
    if (k === "k") data = permuteRows(data, nKv, shape[1]);
    write(encode(data, typeOf(k)));
    const pad = (ALIGN - ((pos - dataBase) % ALIGN)) % ALIGN;
    if (pad) write(Buffer.alloc(pad));
    process.stderr.write(`${name} `);
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, out);
  console.error(`\nwrote ${out}: ${(pos / 1e6).toFixed(1)} MB, ${tensors.length} tensors, ${kind}`);
} catch (e) {
  fs.closeSync(fd);
  fs.rmSync(tmp, { force: true });
  fail(`${out}: ${e.message}`);
}
