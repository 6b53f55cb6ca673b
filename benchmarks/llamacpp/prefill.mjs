// llama.cpp's prompt processing (prefill) on the CPU through node-llama-cpp, for the comparison in
// benchmarks/results/int8-weights.md:
//
//   node prefill.mjs MODEL.gguf PROMPTS.json [threads=2] [batch=512]
//
// PROMPTS.json is what `Rellax.Benchmarks --prefill-anchor` writes: {"yes": id, "no": id, "prompts": [[ids...], ...]} (BOS,
// prompt and the answers' common prefix, exactly the ids our scorer evaluates). The first prompt is evaluated once untimed
// (warm-up: pages the weights in, sizes the buffers); then each prompt is evaluated from an empty sequence and timed, with the
// next-token probabilities at its last position. Prints tokens/s over the timed prompts, the process CPU time of the timed part
// (all threads, from getrusage; steadier than wall time on a shared machine, but it also counts ggml's spin-waiting), and
// p_yes = P(yes) / (P(yes) + P(no)) per prompt (the quantity our scorer computes, to check that both sides run the same model).
import fs from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [modelPath, promptsPath, threadsArg, batchArg] = process.argv.slice(2);
if (!modelPath || !promptsPath) { console.error("usage: node prefill.mjs MODEL.gguf PROMPTS.json [threads] [batch]"); process.exit(2); }
const threads = Number(threadsArg ?? 2), batchSize = Number(batchArg ?? 512);
const { yes, no, prompts } = JSON.parse(fs.readFileSync(promptsPath, "utf8"));
const longest = Math.max(...prompts.map((p) => p.length));

const llama = await getLlama({ gpu: false, build: "never", maxThreads: threads, logLevel: process.env.LLAMA_LOG === "info" ? LlamaLogLevel.info : LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const context = await model.createContext({ contextSize: longest + 16, batchSize, threads: { ideal: threads, min: threads }, sequences: 1 });
const sequence = context.getSequence();

async function evaluate(ids) {
  await sequence.clearHistory();
  const input = ids.map((t, i) => (i === ids.length - 1 ? [t, { generateNext: { probabilities: true } }] : t));
  const out = await sequence.controlledEvaluate(input);
  const p = out[ids.length - 1].next.probabilities;
  const py = p.get(yes) ?? 0, pn = p.get(no) ?? 0;
  return py / (py + pn);
}

await evaluate(prompts[0]);
let tokens = 0;
const pYes = [];
const cpu0 = process.cpuUsage();
const start = process.hrtime.bigint();
for (const ids of prompts) { pYes.push(await evaluate(ids)); tokens += ids.length; }
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpu0), cpuSeconds = (cpu.user + cpu.system) / 1e6; // all threads of the process (getrusage)
console.log(`llama.cpp ${modelPath.split("/").pop()}: ${prompts.length} prompts, ${tokens} tokens in ${seconds.toFixed(2)} s = ` +
  `${(tokens / seconds).toFixed(1)} tokens/s; CPU time ${cpuSeconds.toFixed(2)} s = ${(tokens / cpuSeconds).toFixed(1)} tokens per CPU-second (threads ${threads}, batch ${batchSize}, ${llama.cpuMathCores ?? "?"} math cores)`);
console.log(`llama.cpp ${llama.llamaCppRelease.repo} ${llama.llamaCppRelease.release}; ${llama.systemInfo}`);
console.log(`p_yes: ${pYes.map((v) => v.toFixed(4)).join(" ")}`);
await context.dispose();
await model.dispose();
await llama.dispose();
