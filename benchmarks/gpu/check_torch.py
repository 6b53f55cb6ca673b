#!/usr/bin/env python3
"""The PyTorch side of `rellax selftest --bench --output DIR` (issue 20).

Reads the safetensors files the selftest wrote (the benchmark shapes' inputs and our outputs), checks our outputs
against torch (fp32 GEMM + the CFLoRA adapter, scaled_dot_product_attention, gather + bmm + topk), times torch's own
versions of the same shapes (cuBLAS fp16/fp32 GEMM, unfused CFLoRA, SDPA with the flash backend, gather + bmm + topk)
and prints the ratio table with the issue's targets:

  * CFLoRA adapter overhead <= 10% over the base GEMM at r = 8, T >= 256;
  * SUBR >= 70% of the HBM bandwidth at L >= 2000;
  * int8 attention >= 1.5x torch SDPA (flash, fp16) at T >= 2048, with cosine >= 0.999 against fp32 SDPA.

Without torch (the development VM has none) it runs the same checks with plain-Python references on files small
enough for that (`rellax selftest --bench --size small --output DIR`), so the file layout and the check logic are
tested everywhere; timings need torch and a GPU.

Usage: python3 check_torch.py DIR [--json OUT.json] [--no-torch]
Exit status: 0 when every check passed (targets missed are reported, not failures), 1 otherwise, 2 on bad input.
"""
import argparse
import json
import math
import os
import struct
import sys

DTYPES = {"F32": ("f", 4), "F16": ("e", 2), "I8": ("b", 1), "I32": ("i", 4)}


def read_safetensors(path):
    """(metadata, {name: (dtype, shape, raw bytes)}) of a safetensors file, with its header validated."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    tensors = {}
    for name, info in header.items():
        dtype, shape, (lo, hi) = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}, which this checker does not read")
        count = math.prod(shape)
        if hi - lo != count * DTYPES[dtype][1] or hi > len(data):
            raise ValueError(f"{path}: tensor {name} {dtype}{shape} has {hi - lo} bytes at [{lo}, {hi})")
        tensors[name] = (dtype, shape, data[lo:hi])
    return meta, tensors


def to_list(t):
    """A tensor's elements as a flat Python list (pure mode; struct reads f16, which the array module cannot)."""
    dtype, shape, raw = t
    return list(struct.unpack(f"<{math.prod(shape)}{DTYPES[dtype][0]}", raw))


class Torch:
    """Reference and timing through torch on the GPU (or torch's CPU when there is none)."""

    def __init__(self):
        import torch  # noqa: PLC0415 (optional dependency)
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def tensor(self, t):
        dtype, shape, raw = t
        torch = self.torch
        kind = {"F32": torch.float32, "F16": torch.float16, "I8": torch.int8, "I32": torch.int32}[dtype]
        return torch.frombuffer(bytearray(raw), dtype=kind).reshape(shape).to(self.device)

    def time(self, fn, reps=5):
        """Median ms of fn() after a warm-up, with CUDA events on a GPU."""
        torch = self.torch
        fn()
        times = []
        for _ in range(reps):
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
            else:
                import time  # noqa: PLC0415
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return sorted(times)[len(times) // 2]


def compare(actual, expected):
    """Max abs error, max |expected|, cosine and relative L1 of two flat sequences (pure) or tensors (torch)."""
    if hasattr(actual, "double"):
        a, e = actual.double().flatten(), expected.double().flatten()
        err = (a - e).abs()
        dot, na, ne = float((a * e).sum()), float((a * a).sum()), float((e * e).sum())
        l1, l1e = float(err.sum()), float(e.abs().sum())
        return float(err.max()), float(e.abs().max()), (1.0 if na == ne == 0 else dot / math.sqrt(na * ne)), (l1 / l1e if l1e else l1)
    worst = maxe = dot = na = ne = l1 = l1e = 0.0
    for x, y in zip(actual, expected):
        d = abs(x - y)
        worst, maxe = max(worst, d), max(maxe, abs(y))
        dot, na, ne, l1, l1e = dot + x * y, na + x * x, ne + y * y, l1 + d, l1e + abs(y)
    return worst, maxe, (1.0 if na == ne == 0 else dot / math.sqrt(na * ne)), (l1 / l1e if l1e else l1)


class Report:
    def __init__(self):
        self.checks, self.timings, self.targets = [], [], []

    def check(self, what, ok, detail):
        self.checks.append({"check": what, "ok": bool(ok), "detail": detail})
        print(f"  {'PASS' if ok else 'FAIL'}  {what}: {detail}", flush=True)

    def timing(self, row):
        self.timings.append(row)

    def target(self, what, met, detail):
        self.targets.append({"target": what, "met": bool(met), "detail": detail})


# ---------------------------------------------------------------- CFLoRA
def cflora(meta, ts, tr, rep):
    t, d, r, s = (int(meta[k]) for k in ("T", "d", "r", "S"))
    scale = float(meta["scale"])
    name = f"cflora T={t} d={d} r={r}"
    if tr is None:
        if t * d * d > 8_000_000:
            rep.check(name, True, "skipped in pure mode (too large without torch)")
            return
        x, w0, a, b, g = (to_list(ts[k]) for k in ("x", "w0", "a", "b", "g"))
        sor, y, yb = to_list(ts["sample_of_row"]), to_list(ts["y"]), to_list(ts["y_base"])
        ref, ref_base = [], []
        for i in range(t):
            xi = x[i * d:(i + 1) * d]
            u = [sum(a[j * d + c] * xi[c] for c in range(d)) for j in range(r)]
            gs = g[sor[i] * r * r:(sor[i] + 1) * r * r]
            v = [sum(u[p] * gs[p * r + q] for p in range(r)) for q in range(r)]
            for o in range(d):
                base = sum(w0[o * d + c] * xi[c] for c in range(d))
                ref_base.append(base)
                ref.append(base + scale * sum(b[o * r + q] * v[q] for q in range(r)))
    else:
        torch = tr.torch
        x, w0, a, b, g = (tr.tensor(ts[k]) for k in ("x", "w0", "a", "b", "g"))
        sor = tr.tensor(ts["sample_of_row"]).long()
        y, yb = tr.tensor(ts["y"]), tr.tensor(ts["y_base"])
        w0f = w0.float()
        ref_base = x @ w0f.T
        v = torch.bmm((x @ a.T).unsqueeze(1), g[sor]).squeeze(1)  # v[t] = G_s^T u[t] as a row: u @ G_s
        ref = ref_base + scale * (v @ b.T)
    for label, ours, expected in (("fused", y, ref), ("base GEMM", yb, ref_base)):
        err, maxe, cos, _ = compare(ours, expected)
        rel = err / maxe if maxe else err
        rep.check(f"{name} {label}", rel <= 1e-4, f"max abs {err:.2e}, normwise rel {rel:.2e} (<= 1e-4), cosine {cos:.7f}")
    if tr is None:
        return
    torch = tr.torch
    xh, ah, bh, gh = x.half(), a.half(), b.half(), g.half()
    gemm16 = tr.time(lambda: xh @ w0.T)
    gemm32 = tr.time(lambda: x @ w0f.T)

    def unfused():
        base = xh @ w0.T
        vv = torch.bmm((xh @ ah.T).unsqueeze(1), gh[sor]).squeeze(1)
        return base + scale * (vv @ bh.T)

    lora16 = tr.time(unfused)
    ours, ours_base = float(meta["ms"]), float(meta["base_ms"])
    overhead = 100 * (ours / ours_base - 1)
    rep.timing({"op": "cflora", "shape": f"T={t} d={d} r={r}", "ours_ms": ours, "ours_base_ms": ours_base,
                "torch_fp16_gemm_ms": gemm16, "torch_fp32_gemm_ms": gemm32, "torch_unfused_fp16_ms": lora16,
                "ratio_torch_unfused_over_ours": lora16 / ours})
    if t >= 256:
        rep.target(f"CFLoRA adapter overhead <= 10% (T={t})", overhead <= 10, f"{overhead:.1f}% (ours {ours:.3f} ms vs our base {ours_base:.3f} ms)")


# ---------------------------------------------------------------- SUBR
def subr(meta, ts, tr, rep, peak_gbs):
    bsz, length, d, k = (int(meta[x]) for x in ("B", "L", "d", "K"))
    hist_t, tgt_t = ts["history"], ts["targets"]
    for storage in ("f32", "f16", "i8"):
        if f"table_{storage}" not in ts:
            continue
        name = f"subr.{storage} B={bsz} L={length} d={d} K={k}"
        if tr is None:
            if bsz * length * d > 5_000_000:
                rep.check(name, True, "skipped in pure mode (too large without torch)")
                continue
            table, hist, tgt = to_list(ts[f"table_{storage}"]), to_list(hist_t), to_list(tgt_t)
            scales = to_list(ts["scales_i8"]) if storage == "i8" else None
            pos, sc = to_list(ts[f"positions_{storage}"]), to_list(ts[f"scores_{storage}"])
            worst_gap = worst_score = 0.0
            for s in range(bsz):
                trow = table[tgt[s] * d:(tgt[s] + 1) * d]
                scores = []
                for p in range(length):
                    h = hist[s * length + p]
                    dot = sum(table[h * d + c] * trow[c] for c in range(d))
                    scores.append(dot * scales[h] * scales[tgt[s]] if scales else dot)
                kth = sorted(scores, reverse=True)[min(k, length) - 1]
                mine = pos[s * k:(s + 1) * k]
                if sorted(set(mine)) != mine or any(p < 0 or p >= length for p in mine):
                    worst_gap = math.inf
                    continue
                for j, p in enumerate(mine):
                    worst_gap = max(worst_gap, kth - scores[p])
                    worst_score = max(worst_score, abs(sc[s * k + j] - scores[p]))
        else:
            torch = tr.torch
            table = tr.tensor(ts[f"table_{storage}"])
            hist = tr.tensor(hist_t).long().view(bsz, length)
            tgt = tr.tensor(tgt_t).long()
            scales = tr.tensor(ts["scales_i8"]) if storage == "i8" else None
            pos = tr.tensor(ts[f"positions_{storage}"]).long()
            sc = tr.tensor(ts[f"scores_{storage}"])
            worst_gap = worst_score = 0.0
            chunk = max(1, (1 << 28) // max(1, length * d))  # about 1 GiB of gathered f32 rows per chunk
            for s0 in range(0, bsz, chunk):
                h, tg = hist[s0:s0 + chunk], tgt[s0:s0 + chunk]
                rows, trow = table[h].double(), table[tg].double().unsqueeze(2)
                scores = torch.bmm(rows, trow).squeeze(2)
                if scales is not None:
                    scores = scores * scales[h].double() * scales[tg].double().unsqueeze(1)
                kth = scores.topk(min(k, length), dim=1).values[:, -1:]
                p = pos[s0:s0 + chunk]
                ordered = bool(((p[:, 1:] - p[:, :-1]) > 0).all()) and bool(((p >= 0) & (p < length)).all())
                if not ordered:
                    worst_gap = math.inf
                    break
                picked = scores.gather(1, p)
                worst_gap = max(worst_gap, float((kth - picked).max()))
                worst_score = max(worst_score, float((sc[s0:s0 + chunk].double() - picked).abs().max()))
        ok = worst_gap <= 1e-5 and worst_score <= 1e-4
        rep.check(name, ok, f"kept items at most {max(worst_gap, 0):.1e} below the K-th best (near-tie bound 1e-5), scores within {worst_score:.1e}")
        if tr is None:
            continue
        torch = tr.torch
        h = hist
        work = table if storage != "i8" else table.float()

        def gather_bmm_topk():
            for s0 in range(0, bsz, chunk):
                rows = work[h[s0:s0 + chunk]]
                sco = torch.bmm(rows, work[tgt[s0:s0 + chunk]].unsqueeze(2)).squeeze(2)
                sco.topk(min(k, length), dim=1)

        torch_ms = tr.time(gather_bmm_topk, reps=3)
        ours = float(meta[f"ms_{storage}"])
        elem = {"f32": 4, "f16": 2, "i8": 1}[storage]
        nbytes = bsz * length * (d * elem + 4 + (4 if storage == "i8" else 0))
        gbs = nbytes / (ours * 1e-3) / 1e9
        rep.timing({"op": f"subr.{storage}", "shape": f"B={bsz} L={length} d={d}", "ours_ms": ours, "torch_gather_bmm_topk_ms": torch_ms,
                    "ours_gb_per_s": gbs, "peak_gb_per_s": peak_gbs, "ratio_torch_over_ours": torch_ms / ours})
        if length >= 2000 and peak_gbs:
            rep.target(f"SUBR {storage} >= 70% of HBM (L={length})", gbs >= 0.7 * peak_gbs, f"{gbs:.0f} GB/s = {100 * gbs / peak_gbs:.0f}% of {peak_gbs:.0f}")


# ---------------------------------------------------------------- attention
def attention(meta, ts, tr, rep):
    hq, hkv, t, d = (int(meta[x]) for x in ("Hq", "Hkv", "T", "D"))
    group, scale = hq // hkv, 1 / math.sqrt(d)
    name = f"attention Hq={hq} Hkv={hkv} T={t} D={d}"
    if tr is None:
        if hq * t * t * d > 20_000_000:
            rep.check(name, True, "skipped in pure mode (too large without torch)")
            return
        q, k, v = (to_list(ts[x]) for x in ("q", "k", "v"))
        ref = [0.0] * (hq * t * d)
        for h in range(hq):
            kh = h // group
            for i in range(t):
                qi = q[(h * t + i) * d:(h * t + i + 1) * d]
                logits = [scale * sum(qi[c] * k[(kh * t + j) * d + c] for c in range(d)) for j in range(i + 1)]
                m = max(logits)
                p = [math.exp(x - m) for x in logits]
                z = sum(p)
                for c in range(d):
                    ref[(h * t + i) * d + c] = sum(p[j] * v[(kh * t + j) * d + c] for j in range(i + 1)) / z
        outs = {p: to_list(ts[f"o_{p}"]) for p in ("fp32", "int8")}
    else:
        torch = tr.torch
        q, k, v = (tr.tensor(ts[x]) for x in ("q", "k", "v"))
        ke, ve = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        ref = torch.nn.functional.scaled_dot_product_attention(q, ke, ve, is_causal=True)
        outs = {p: tr.tensor(ts[f"o_{p}"]) for p in ("fp32", "int8")}
    err, maxe, cos, l1 = compare(outs["fp32"], ref)
    rep.check(f"{name} fp32", err <= 1e-3 and cos >= 0.99999, f"max abs {err:.2e} (<= 1e-3), cosine {cos:.7f}")
    err, maxe, cos, l1 = compare(outs["int8"], ref)
    rep.check(f"{name} int8", cos >= 0.999 and l1 <= 0.02, f"cosine {cos:.6f} (>= 0.999), relL1 {l1:.2e} (<= 0.02)")
    if tr is None:
        return
    torch = tr.torch
    qh, kh_, vh = q.half(), ke.half(), ve.half()
    sdpa = torch.nn.functional.scaled_dot_product_attention
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: PLC0415

        def flash():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                sdpa(qh, kh_, vh, is_causal=True)
        flash_ms, backend = tr.time(flash), "flash"
    except (ImportError, RuntimeError) as e:
        print(f"  note: SDPA flash backend unavailable ({e}); timing the default SDPA", flush=True)
        flash_ms, backend = tr.time(lambda: sdpa(qh, kh_, vh, is_causal=True)), "default"
    fp32_ms = tr.time(lambda: sdpa(q, ke, ve, is_causal=True))
    ours8, ours32 = float(meta["ms_int8"]), float(meta["ms_fp32"])
    rep.timing({"op": "attention", "shape": f"Hq={hq} Hkv={hkv} T={t} D={d}", "ours_int8_ms": ours8, "ours_fp32_ms": ours32,
                f"torch_sdpa_{backend}_fp16_ms": flash_ms, "torch_sdpa_fp32_ms": fp32_ms, "speedup_int8_vs_torch_fp16": flash_ms / ours8})
    if t >= 2048:
        rep.target(f"int8 attention >= 1.5x torch SDPA (T={t})", flash_ms / ours8 >= 1.5 and cos >= 0.999,
                   f"{flash_ms / ours8:.2f}x ({ours8:.3f} ms vs SDPA {backend} fp16 {flash_ms:.3f} ms), cosine {cos:.6f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="the --output folder of rellax selftest --bench")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--no-torch", action="store_true", help="use the plain-Python references even when torch is installed")
    args = ap.parse_args(argv)
    manifest_path = os.path.join(args.dir, "selftest.json")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        print(f"check_torch: {manifest_path}: {e}", file=sys.stderr)
        return 2
    tr = None
    if not args.no_torch:
        try:
            tr = Torch()
        except ImportError:
            print("check_torch: torch is not installed; checking small files with plain-Python references, no timings", flush=True)
    if tr is not None:
        print(f"check_torch: torch {tr.torch.__version__} on {tr.device}"
              + (f" ({tr.torch.cuda.get_device_name()})" if tr.device == "cuda" else ""), flush=True)
    peaks = {p["backend"]: p for p in manifest.get("peaks", [])}
    rep = Report()
    for name in manifest["files"]:
        path = os.path.join(args.dir, name)
        try:
            meta, ts = read_safetensors(path)
        except (OSError, ValueError, KeyError) as e:
            rep.check(name, False, f"unreadable: {e}")
            continue
        print(f"{name}:", flush=True)
        op = meta.get("op")
        if op == "cflora":
            cflora(meta, ts, tr, rep)
        elif op == "subr":
            subr(meta, ts, tr, rep, (peaks.get(meta.get("backend")) or {}).get("gb_per_s"))
        elif op == "attention":
            attention(meta, ts, tr, rep)
        else:
            rep.check(name, False, f"unknown op {op!r}")
    if rep.timings:
        print("\nratio table (our times from the selftest, torch's measured here; ms):")
        for row in rep.timings:
            print("  " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if rep.targets:
        print("\nissue 20 targets:")
        for t in rep.targets:
            print(f"  {'MET   ' if t['met'] else 'MISSED'}  {t['target']}: {t['detail']}")
    failed = [c for c in rep.checks if not c["ok"]]
    print(f"\ncheck_torch: {len(rep.checks) - len(failed)} checks passed, {len(failed)} failed; "
          f"{sum(t['met'] for t in rep.targets)}/{len(rep.targets)} targets met")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"checks": rep.checks, "timings": rep.timings, "targets": rep.targets}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
