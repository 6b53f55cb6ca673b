namespace Rellax.Kernels;

public static partial class KernelSelftest
{
    /// <summary>Flash attention: fp32 and int8 prefill (GQA, left padding, both layouts), int8 decode, the fp32 backward.</summary>
    private static IEnumerable<Case> AttentionCases(Func<int, int, int, int> pick, Func<Data> rand)
    {
        int batch = 2, hq = 4, hkv = 2, t = pick(37, 131, 517), hd = pick(64, 64, 128);
        int[] lengths = [t, t - t / 4 - 1];
        float scale = 1f / MathF.Sqrt(hd);
        string shape = $"B={batch} Hq={hq} Hkv={hkv} T={t} D={hd} len=[{lengths[0]},{lengths[1]}]";
        foreach (var (precision, layout) in new[] { (AttentionPrecision.Fp32, AttentionLayout.HeadMajor), (AttentionPrecision.Int8, AttentionLayout.TokenMajor) })
        {
            var s = new AttentionShape(batch, hq, hkv, t, hd, layout);
            var d = rand();
            var q = d.Normal(batch * hq * t * hd); var k = d.Normal(batch * hkv * t * hd); var v = d.Normal(batch * hkv * t * hd);
            var exact = new Lazy<double[]>(() => AttentionReference.Exact(q, k, v, s, lengths, scale, causal: true));
            var options = new AttentionOptions { Precision = precision, Layout = layout };
            Func<SelftestRun, float[]> run = r =>
            {
                var (qt, kt, vt, ot) = (r.Up(q, s.ShapeOf(hq)), r.Up(k, s.ShapeOf(hkv)), r.Up(v, s.ShapeOf(hkv)), r.Zeros(s.ShapeOf(hq)));
                r.Time(() => r.Backend.Attention.Prefill(qt, kt, vt, lengths, ot, options));
                return SelftestRun.Read(ot);
            };
            string layoutName = layout == AttentionLayout.HeadMajor ? "head-major" : "token-major";
            if (precision == AttentionPrecision.Fp32)
                yield return new Case("attention.fp32.prefill", $"{shape} {layoutName}", new Elementwise(5e-5, 1e-4), run, _ => exact.Value);
            else
                yield return new Case("attention.int8.prefill", $"{shape} {layoutName}", new RelativeL1(1e-3), run,
                    Fixed(() => AttentionReference.Int8Prefill(q, k, v, s, lengths, scale, causal: true)),
                    output => CosineAgainst(output, exact.Value));
        }
        {
            // Decode: a prefill chunk with padding into the int8 cache, then Tq new tokens appended and attended.
            int tq = pick(3, 5, 9), cap = t + tq;
            var s1 = new AttentionShape(batch, hkv, hkv, t, hd, AttentionLayout.HeadMajor);
            var s2 = new AttentionShape(batch, hkv, hkv, tq, hd, AttentionLayout.HeadMajor);
            var sq = new AttentionShape(batch, hq, hkv, tq, hd, AttentionLayout.HeadMajor);
            var d = rand();
            var k1 = d.Normal(batch * hkv * t * hd); var v1 = d.Normal(k1.Length);
            var k2 = d.Normal(batch * hkv * tq * hd); var v2 = d.Normal(k2.Length);
            var q = d.Normal(batch * hq * tq * hd);
            yield return new Case("attention.int8.decode", $"{shape} +Tq={tq}", new RelativeL1(1e-3),
                r =>
                {
                    var cache = r.Own(r.Backend.Attention.CreateKvCache(batch, hkv, hd, cap));
                    var (k1t, v1t, k2t, v2t) = (r.Up(k1, s1.ShapeOf(hkv)), r.Up(v1, s1.ShapeOf(hkv)), r.Up(k2, s2.ShapeOf(hkv)), r.Up(v2, s2.ShapeOf(hkv)));
                    var (qt, ot) = (r.Up(q, sq.ShapeOf(hq)), r.Zeros(sq.ShapeOf(hq)));
                    r.Time(() =>
                    {
                        r.Backend.Attention.Append(cache, k1t, v1t, lengths);
                        r.Backend.Attention.Append(cache, k2t, v2t);
                        r.Backend.Attention.Decode(qt, cache, ot);
                    });
                    return SelftestRun.Read(ot);
                },
                Fixed(() =>
                {
                    var image = new AttentionReference.CacheImage(batch, hkv, hd, cap);
                    AttentionReference.QuantizeIntoCache(image, k1, v1, s1, lengths);
                    AttentionReference.QuantizeIntoCache(image, k2, v2, s2, null);
                    return AttentionReference.Int8Decode(q, image, sq, scale, causal: true);
                }));
        }
        {
            var s = new AttentionShape(batch, hq, hkv, pick(37, 67, 131), hd, AttentionLayout.HeadMajor);
            int[] lens = [s.Tokens, s.Tokens - 5];
            var d = rand();
            var q = d.Normal(batch * hq * s.Tokens * hd); var k = d.Normal(batch * hkv * s.Tokens * hd); var v = d.Normal(k.Length);
            var dO = d.Normal(q.Length);
            yield return new Case("attention.fp32.backward", $"B={batch} Hq={hq} Hkv={hkv} T={s.Tokens} D={hd} len=[{lens[0]},{lens[1]}] (dq,dk,dv)",
                new Elementwise(1e-4, 1e-3),
                r =>
                {
                    var (qt, kt, vt, dOt) = (r.Up(q, s.ShapeOf(hq)), r.Up(k, s.ShapeOf(hkv)), r.Up(v, s.ShapeOf(hkv)), r.Up(dO, s.ShapeOf(hq)));
                    var (ot, lse) = (r.Zeros(s.ShapeOf(hq)), r.Zeros(batch, hq, s.Tokens));
                    var (dq, dk, dv) = (r.Zeros(s.ShapeOf(hq)), r.Zeros(s.ShapeOf(hkv)), r.Zeros(s.ShapeOf(hkv)));
                    var options = new AttentionOptions { Precision = AttentionPrecision.Fp32 };
                    r.Time(() =>
                    {
                        r.Backend.Attention.Prefill(qt, kt, vt, lens, ot, lse, options);
                        r.Backend.Attention.Backward(qt, kt, vt, ot, dOt, lse, lens, dq, dk, dv, options);
                    });
                    return SelftestRun.Read(dq, dk, dv);
                },
                Fixed(() =>
                {
                    var (dq, dk, dv, _) = AttentionReference.ExactBackward(q, k, v, dO, s, lens, scale, causal: true);
                    return [.. dq, .. dk, .. dv];
                }));
        }
    }

    private static (bool, string) CosineAgainst(float[] output, double[] exact)
    {
        var (cosine, relL1) = Similarity(output, exact);
        return (cosine >= 0.999 && relL1 <= 0.02, $"vs exact fp64: cosine {cosine:F6}, relL1 {relL1:E2} (SPEC bound: >= 0.999, <= 0.02)");
    }

    /// <summary>The fused CFLoRA forward (f32 and f16 weights), its backward, and the generator MLP.</summary>
    private static IEnumerable<Case> CfloraCases(Func<int, int, int, int> pick, Func<Data> rand)
    {
        int din = pick(67, 515, 2051), dout = pick(45, 259, 1031), r = 8;
        int[] perSample = [pick(5, 40, 120), pick(19, 77, 300), pick(13, 12, 99)];
        int t = perSample.Sum(), samples = perSample.Length;
        var sampleOfRow = perSample.SelectMany((count, s) => Enumerable.Repeat(s, count)).ToArray();
        const float scale = 2f;
        foreach (var dtype in new[] { DType.F32, DType.F16 })
        {
            var d = rand();
            var x = d.Uniform(t * din); var w0 = Through(dtype, d.Uniform(dout * din)); var bias = d.Uniform(dout);
            var a = Through(dtype, d.Uniform(r * din)); var b = Through(dtype, d.Uniform(dout * r)); var g = d.Uniform(samples * r * r);
            yield return new Case($"cflora.forward.{Name(dtype)}", $"T={t} S={samples} d_in={din} d_out={dout} r={r} +bias",
                new Elementwise(2e-5 * Math.Sqrt(din), 2e-5),
                run =>
                {
                    var batch = run.Own(CfloraBatch.FromLengths(perSample));
                    var module = new CfloraModule(UpAs(run, dtype, w0, dout, din), run.Up(bias, dout), UpAs(run, dtype, a, r, din),
                        UpAs(run, dtype, b, dout, r), run.Up(g, samples, r, r), scale, run.Zeros(t, dout));
                    var xt = run.Up(x, t, din);
                    run.Time(() => run.Backend.Cflora.Forward(xt, module, batch));
                    return SelftestRun.Read(module.Y);
                },
                FixedF(() => { var y = new float[t * dout]; CfloraReference.Forward(x, w0, bias, a, b, g, sampleOfRow, scale, y, din, dout, r); return y; }));
        }
        {
            var d = rand();
            var x = d.Uniform(t * din); var w0 = d.Uniform(dout * din); var a = d.Uniform(r * din); var b = d.Uniform(dout * r);
            var g = d.Uniform(samples * r * r); var dy = d.Uniform(t * dout);
            yield return new Case("cflora.backward", $"T={t} S={samples} d_in={din} d_out={dout} r={r} (dx,dA,dB,dG)",
                new Elementwise(2e-5 * Math.Sqrt(Math.Max(din, t)), 2e-5),
                run =>
                {
                    var batch = run.Own(CfloraBatch.FromLengths(perSample));
                    var (dx, da, db, dg) = (run.Zeros(t, din), run.Zeros(r, din), run.Zeros(dout, r), run.Zeros(samples, r, r));
                    var module = new CfloraBackwardModule(run.Up(w0, dout, din), run.Up(a, r, din), run.Up(b, dout, r), run.Up(g, samples, r, r),
                        scale, run.Up(dy, t, dout), da, db, dg);
                    var xt = run.Up(x, t, din);
                    run.Time(() => run.Backend.Cflora.Backward(xt, [module], batch, dx));
                    return SelftestRun.Read(dx, da, db, dg);
                },
                FixedF(() =>
                {
                    var (dx, da, db, dg) = (new float[t * din], new float[r * din], new float[dout * r], new float[samples * r * r]);
                    CfloraReference.Backward(x, w0, a, b, g, sampleOfRow, scale, dy, dx, da, db, dg, din, dout, r, samples);
                    return [.. dx, .. da, .. db, .. dg];
                }));
        }
        {
            int dh = pick(67, 259, 1031), gr = 4, hidden = 2 * gr * gr, s = pick(3, 17, 65);
            var d = rand();
            var h = d.Uniform(s * dh, -2, 2); var lnW = d.Uniform(dh, 0.5f, 1.5f); var lnB = d.Uniform(dh, -0.1f, 0.1f);
            var w1 = d.Uniform(hidden * dh, -0.2f, 0.2f); var b1 = d.Uniform(hidden); var w2 = d.Uniform(gr * gr * hidden, -0.3f, 0.3f); var b2 = d.Uniform(gr * gr);
            yield return new Case("cflora.generator", $"S={s} d_h={dh} r={gr}", new Elementwise(2e-5, 1e-4),
                run =>
                {
                    var (ht, lw, lb, w1t, b1t, w2t, b2t, gt) = (run.Up(h, s, dh), run.Up(lnW, dh), run.Up(lnB, dh), run.Up(w1, hidden, dh),
                        run.Up(b1, hidden), run.Up(w2, gr * gr, hidden), run.Up(b2, gr * gr), run.Zeros(s, gr, gr));
                    run.Time(() => run.Backend.Cflora.Generate(ht, lw, lb, 1e-5f, w1t, b1t, w2t, b2t, gt));
                    return SelftestRun.Read(gt);
                },
                FixedF(() => { var g = new float[s * gr * gr]; CfloraReference.Generate(h, lnW, lnB, 1e-5f, w1, b1, w2, b2, g, dh, gr); return g; }));
        }
    }

    /// <summary>SUBR top-K over f32, f16 and i8 tables.</summary>
    private static IEnumerable<Case> SubrCases(Func<int, int, int, int> pick, Func<Data> rand)
    {
        int rows = pick(301, 4099, 65537), dim = pick(67, 131, 512), k = pick(16, 32, 50), batch = pick(6, 33, 129);
        foreach (var storage in new[] { DType.F32, DType.F16, DType.I8 })
        {
            var d = rand();
            var vectors = d.Uniform(rows * dim);
            int[] lengths = [.. Enumerable.Range(0, batch).Select(i => i == 0 ? 0 : i == 1 ? k - 3 : d.Next(k, pick(250, 2500, 20000)))];
            var offsets = new int[batch + 1];
            for (int i = 0; i < batch; i++) offsets[i + 1] = offsets[i] + lengths[i];
            var history = d.Ints(offsets[batch], rows); var targets = d.Ints(batch, rows);
            // The stored table (normalised and converted on the host, the same for every backend) is the reference's input.
            var stored = new Lazy<(float[] Rows, sbyte[] Q, float[] Scales)>(() =>
            {
                using var host = new Cpu.CpuBackend(1);
                using var table = SubrTable.Create(host, vectors, rows, dim, storage);
                var bytes = new byte[(long)rows * dim * storage.SizeInBytes()];
                var scales = new float[storage == DType.I8 ? rows : 0];
                table.CopyStoredTo(bytes, scales);
                var q = storage == DType.I8 ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(bytes).ToArray() : [];
                var f = storage switch
                {
                    DType.F32 => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray(),
                    DType.F16 => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(bytes).ToArray().Select(h => (float)h).ToArray(),
                    _ => [],
                };
                return (f, q, scales);
            });
            var scores = new Lazy<double[][]>(() => Enumerable.Range(0, batch).Select(i =>
            {
                var hist = history.AsSpan(offsets[i], lengths[i]);
                var (f, q, sc) = stored.Value;
                return storage == DType.I8 ? SubrReference.ScoresInt8(q, sc, dim, hist, targets[i]) : SubrReference.Scores(f, dim, hist, targets[i]);
            }).ToArray());
            yield return new Case($"subr.{Name(storage)}", $"N={rows} d={dim} B={batch} L<={lengths.Max()} K={k}",
                new Elementwise(storage == DType.I8 ? 1e-6 : 2e-6, 1e-5),
                run =>
                {
                    var table = run.Own(SubrTable.Create(run.Backend, vectors, rows, dim, storage));
                    var queries = run.Own(SubrQueries.Create(history, offsets, targets));
                    var (positions, sc) = (run.Zeros(DType.I32, batch, k), run.Zeros(batch, k));
                    run.Time(() => run.Backend.Subr.Run(table, queries, k, SubrOrder.Chronological, positions, sc));
                    return SelftestRun.Read(positions, sc);
                },
                // Positions are checked by the extra condition; here: the same positions, and the reference's scores at them.
                output =>
                {
                    var expected = new double[output.Length];
                    for (int i = 0; i < batch * k; i++)
                    {
                        int sample = i / k, p = (int)output[i];
                        expected[i] = output[i];
                        expected[batch * k + i] = p >= 0 && p < lengths[sample] ? scores.Value[sample][p] : double.NaN;
                    }
                    return expected;
                },
                output => SubrSelectionIsTopK(output, scores.Value, lengths, k));
        }
    }

    /// <summary>
    /// Whether each sample's positions are a top-K of the reference scores: min(L, K) distinct positions in increasing
    /// (chronological) order, -1 after them, and none scoring below the reference's K-th best by more than a near-tie
    /// (1e-5: fp32 summation order may swap items whose double scores differ by less).
    /// </summary>
    private static (bool, string) SubrSelectionIsTopK(float[] output, double[][] scores, int[] lengths, int k)
    {
        int worstSample = -1;
        double worstGap = 0;
        for (int s = 0; s < lengths.Length; s++)
        {
            int count = Math.Min(lengths[s], k);
            var sorted = scores[s].OrderDescending().ToArray();
            double kth = count == 0 ? double.NegativeInfinity : sorted[count - 1];
            for (int j = 0; j < k; j++)
            {
                int p = (int)output[s * k + j];
                bool ok = j < count
                    ? p >= 0 && p < lengths[s] && (j == 0 || p > (int)output[s * k + j - 1])
                    : p == -1;
                if (!ok) return (false, $"sample {s}: slot {j} holds position {p} (L = {lengths[s]}, K = {k})");
                if (j < count && kth - scores[s][p] > worstGap) { worstGap = kth - scores[s][p]; worstSample = s; }
            }
        }
        return worstGap <= 1e-5
            ? (true, worstGap == 0 ? "same top-K as the reference" : $"top-K equal up to near-ties ({worstGap:E1})")
            : (false, $"sample {worstSample}: a kept item scores {worstGap:E2} below the reference's K-th best");
    }

    /// <summary>The backward ops training uses (the CRM's and the frozen Llama layer's).</summary>
    private static IEnumerable<Case> BackwardCases(Func<int, int, int, int> pick, Func<Data> rand)
    {
        int m = pick(19, 67, 257), kk = pick(67, 259, 1031), n = pick(45, 131, 515);
        {
            var d = rand();
            var x = d.Uniform(m * kk); var w = d.Uniform(n * kk); var dy = d.Uniform(m * n);
            yield return new Case("backward.linear", $"M={m} K={kk} N={n} (dx,dw,db)", new Elementwise(1e-5 * Math.Sqrt(Math.Max(m, n)), 1e-5),
                run =>
                {
                    var (xt, wt, dyt, dx, dw, db) = (run.Up(x, m, kk), run.Up(w, n, kk), run.Up(dy, m, n), run.Zeros(m, kk), run.Zeros(n, kk), run.Zeros(n));
                    run.Time(() => run.Backend.Backward.LinearBackward(xt, wt, dyt, dx, dw, db));
                    return SelftestRun.Read(dx, dw, db);
                },
                FixedF(() =>
                {
                    var (dx, dw, db) = (new float[m * kk], new float[n * kk], new float[n]);
                    BackwardReference.LinearBackward(x, w, dy, dx, dw, db, m, kk, n);
                    return [.. dx, .. dw, .. db];
                }));
        }
        {
            var d = rand();
            var x = d.Uniform(m * n, -6, 6); var dy = d.Uniform(m * n);
            yield return new Case("backward.gelu", $"R={m} N={n}", new Elementwise(1e-6, 1e-5),
                run =>
                {
                    var (xt, dyt, dx) = (run.Up(x, m, n), run.Up(dy, m, n), run.Zeros(m, n));
                    run.Time(() => run.Backend.Backward.GeluBackward(xt, dyt, dx));
                    return SelftestRun.Read(dx);
                },
                FixedF(() => { var dx = new float[x.Length]; BackwardReference.GeluBackward(x, dy, dx); return dx; }));
        }
        {
            var d = rand();
            var x = d.Uniform(m * n, -3, 3); var weight = d.Uniform(n, 0.5f, 1.5f); var dy = d.Uniform(m * n);
            yield return new Case("backward.layernorm", $"R={m} N={n} (dx,dw,db)", new Elementwise(2e-5, 1e-4),
                run =>
                {
                    var (xt, wt, dyt, dx, dw, db) = (run.Up(x, m, n), run.Up(weight, n), run.Up(dy, m, n), run.Zeros(m, n), run.Zeros(n), run.Zeros(n));
                    run.Time(() => run.Backend.Backward.LayerNormBackward(xt, wt, 1e-5f, dyt, dx, dw, db));
                    return SelftestRun.Read(dx, dw, db);
                },
                FixedF(() =>
                {
                    var (dx, dw, db) = (new float[m * n], new float[n], new float[n]);
                    BackwardReference.LayerNormBackward(x, weight, 1e-5f, dy, dx, dw, db, n);
                    return [.. dx, .. dw, .. db];
                }));
        }
        {
            var d = rand();
            var x = d.Uniform(m * n, -3, 3); var weight = d.Uniform(n, 0.5f, 1.5f); var dy = d.Uniform(m * n);
            yield return new Case("backward.rmsnorm", $"R={m} N={n}", new Elementwise(2e-5, 1e-4),
                run =>
                {
                    var (xt, wt, dyt, dx) = (run.Up(x, m, n), run.Up(weight, n), run.Up(dy, m, n), run.Zeros(m, n));
                    run.Time(() => run.Backend.Backward.RmsNorm(xt, wt, 1e-5f, dyt, dx));
                    return SelftestRun.Read(dx);
                },
                FixedF(() => { var dx = new float[x.Length]; BackwardReference.RmsNorm(x, weight, 1e-5f, dy, dx, n); return dx; }));
        }
        {
            int t = pick(11, 67, 259), heads = 3, hd = pick(16, 64, 128), p = 4 * t;
            var d = rand();
            var dy = d.Uniform(t * heads * hd); var positions = d.Ints(t, p);
            var (cos, sin) = RopeTables.Build(RopeTables.InverseFrequencies(hd, 10000), p);
            yield return new Case("backward.rope", $"T={t} H={heads} D={hd}", new Elementwise(1e-5, 1e-5),
                run =>
                {
                    var (dyt, pt, ct, st) = (run.Up(dy, t, heads, hd), run.Up(positions, t), run.Up(cos, p, hd / 2), run.Up(sin, p, hd / 2));
                    run.Time(() => run.Backend.Backward.Rope(dyt, pt, ct, st));
                    return SelftestRun.Read(dyt);
                },
                FixedF(() => { var dx = new float[dy.Length]; BackwardReference.Rope(dy, positions, cos, sin, dx, heads, hd); return dx; }));
        }
        {
            var d = rand();
            var gate = d.Uniform(m * n, -8, 8); var up = d.Uniform(m * n, -2, 2); var dy = d.Uniform(m * n);
            yield return new Case("backward.swiglu", $"R={m} N={n} (dgate,dup)", new Elementwise(1e-5, 1e-5),
                run =>
                {
                    var (gt, ut, dyt, dg, du) = (run.Up(gate, m, n), run.Up(up, m, n), run.Up(dy, m, n), run.Zeros(m, n), run.Zeros(m, n));
                    run.Time(() => run.Backend.Backward.SwiGlu(gt, ut, dyt, dg, du));
                    return SelftestRun.Read(dg, du);
                },
                FixedF(() =>
                {
                    var (dg, du) = (new float[m * n], new float[m * n]);
                    BackwardReference.SwiGlu(gate, up, dy, dg, du);
                    return [.. dg, .. du];
                }));
        }
    }
}
