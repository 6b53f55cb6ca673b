namespace Rellax.Kernels;

/// <summary>
/// The fused CFLoRA linear layer (SPEC §4) on one backend, serving the whole LoRA family through the r × r
/// interaction matrix: for token row t of sample s,
/// <c>y[t] = W0 x[t] (+ bias) + scale · B (G_sᵀ (A x[t]))</c>.
/// Vanilla LoRA is G = I, iLoRA a block-diagonal G, RecLoRA (w wᵀ) ⊗ I, CFLoRA a dense G from the generator.
/// Every method checks its arguments and throws <see cref="ArgumentException"/> naming the argument and shapes.
/// </summary>
public sealed class CfloraLinear
{
    private readonly ComputeBackend _backend;

    internal CfloraLinear(ComputeBackend backend) => _backend = backend;

    private ICfloraKernels K => _backend.CfloraKernels;

    /// <summary>One adapted layer: see <see cref="Forward(Tensor, ReadOnlySpan{CfloraModule}, CfloraBatch)"/>.</summary>
    public void Forward(Tensor x, CfloraModule module, CfloraBatch batch) => Forward(x, [module], batch);

    /// <summary>
    /// Several adapted layers that read the same input (q, k and v; or gate and up) in one call, so x is read once.
    /// </summary>
    /// <param name="x">Input rows, f32 [T, d_in].</param>
    /// <param name="modules">The layers; each has its own weights, r, interaction matrices and output.</param>
    /// <param name="batch">Which sample each of the T rows belongs to; S = <see cref="CfloraBatch.Samples"/>.</param>
    public void Forward(Tensor x, ReadOnlySpan<CfloraModule> modules, CfloraBatch batch)
    {
        ArgumentNullException.ThrowIfNull(batch);
        Check.F32(_backend, x, nameof(x), 2);
        if (modules.IsEmpty) throw new ArgumentException("at least one module is needed", nameof(modules));
        if (batch.Rows != x.Dim(0))
            throw new ArgumentException($"the batch has {batch.Rows} rows but x {x} has {x.Dim(0)}", nameof(batch));
        for (int m = 0; m < modules.Length; m++) CheckModule(x, modules[m], batch, m);
        // Modules may run one after another: an output must not alias any module's inputs or another output.
        for (int m = 0; m < modules.Length; m++)
            for (int o = 0; o < modules.Length; o++)
            {
                if (o == m) continue;
                var (y, other, p) = (modules[m].Y, modules[o], $"modules[{o}].");
                string yName = $"modules[{m}].Y";
                Check.NoOverlap(y, yName, other.Y, p + "Y");
                Check.NoOverlap(y, yName, other.W0, p + "W0");
                Check.NoOverlap(y, yName, other.A, p + "A");
                Check.NoOverlap(y, yName, other.B, p + "B");
                Check.NoOverlap(y, yName, other.G, p + "G");
                if (other.Bias is { } bias) Check.NoOverlap(y, yName, bias, p + "Bias");
            }
        if (x.Dim(0) == 0) return;
        K.Forward(x, modules, batch.RowIndexOn(_backend));
    }

    /// <summary>
    /// The backward of <see cref="Forward(Tensor, ReadOnlySpan{CfloraModule}, CfloraBatch)"/> for adapted layers that
    /// read the same input x (q, k and v; or gate and up): each module's requested parameter gradients (dA, dB, dG; see
    /// <see cref="CfloraBackwardModule"/>) and the input gradient <c>dX[t] = Σ_m (W0_mᵀ dY_m[t] + A_mᵀ du_m[t])</c>,
    /// computed without materialising any ΔW: the adapter part is r more K steps of the base dX GEMM, over the
    /// concatenation of every module's [dY | du] against [W0; A], so dX is written once. W0 and the bias are frozen.
    /// </summary>
    /// <param name="x">The forward's input rows, f32 [T, d_in] (u = A x is recomputed from it: 2·T·r·d_in FLOPs).</param>
    /// <param name="modules">The layers, each with its output gradient dY [T, d_out] and the gradients wanted.</param>
    /// <param name="batch">Which sample each of the T rows belongs to, as in the forward.</param>
    /// <param name="dx">Output: f32 [T, d_in], overwritten with the gradient of the loss with respect to x, summed over
    /// the modules; or null when x needs no gradient (then the base GEMM, 2·T·d_out·d_in FLOPs per module, is skipped).</param>
    /// <exception cref="ArgumentException">A dtype, shape, backend or overlap is wrong (the message names the argument).</exception>
    public void Backward(Tensor x, ReadOnlySpan<CfloraBackwardModule> modules, CfloraBatch batch, Tensor? dx)
    {
        ArgumentNullException.ThrowIfNull(batch);
        Check.F32(_backend, x, nameof(x), 2);
        if (modules.IsEmpty) throw new ArgumentException("at least one module is needed", nameof(modules));
        if (batch.Rows != x.Dim(0))
            throw new ArgumentException($"the batch has {batch.Rows} rows but x {x} has {x.Dim(0)}", nameof(batch));
        var inputs = new List<(Tensor T, string Name)> { (x, nameof(x)) };
        var outputs = new List<(Tensor T, string Name)>();
        if (dx is { } d)
        {
            Check.F32(_backend, d, nameof(dx), 2);
            if (d.Dim(0) != x.Dim(0) || d.Dim(1) != x.Dim(1))
                throw new ArgumentException($"dx {d} must have the shape of x {x}", nameof(dx));
            outputs.Add((d, nameof(dx)));
        }
        for (int m = 0; m < modules.Length; m++) CheckBackwardModule(x, modules[m], batch, m, inputs, outputs);
        // Every output is written while the inputs are still read: no output may share an element with any tensor.
        for (int o = 0; o < outputs.Count; o++)
        {
            foreach (var (t, name) in inputs) Check.NoOverlap(outputs[o].T, outputs[o].Name, t, name);
            for (int p = o + 1; p < outputs.Count; p++) Check.NoOverlap(outputs[o].T, outputs[o].Name, outputs[p].T, outputs[p].Name);
        }
        if (x.Dim(0) == 0)
        {
            // No rows: every gradient is an empty sum.
            foreach (var (t, _) in outputs) Zero(t);
            return;
        }
        K.Backward(x, modules, batch.RowIndexOn(_backend), batch.Samples, dx);
    }

    private void Zero(in Tensor t)
    {
        if (t.ElementCount == 0) return;
        var zeros = new float[t.ElementCount];
        t.Buffer.CopyFrom<float>(zeros, t.Offset);
    }

    private void CheckBackwardModule(in Tensor x, in CfloraBackwardModule module, CfloraBatch batch, int index,
        List<(Tensor, string)> inputs, List<(Tensor, string)> outputs)
    {
        string p = $"modules[{index}].";
        var (w0, a, b, dy) = (module.W0, module.A, module.B, module.DY);
        if (module.W0Int8 is { } q)
        {
            ObjectDisposedException.ThrowIf(q.IsDisposed, q);
            if (!ReferenceEquals(q.Backend, _backend))
                throw new ArgumentException($"{p}W0Int8 {q} lives on backend '{q.Backend.Name}', not '{_backend.Name}'", p + "W0Int8");
            if (_backend is not Cpu.CpuBackend)
                throw new NotSupportedException($"{p}W0Int8: the CFLoRA backward reads int8 base weights on the cpu backend only, not '{_backend.Name}'");
        }
        else Check.Floating(_backend, w0, p + "W0", 2);
        Check.Floating(_backend, a, p + "A", 2);
        Check.Floating(_backend, b, p + "B", 2);
        Check.F32(_backend, dy, p + "DY", 2);
        string w0Text = module.W0Int8?.ToString() ?? w0.ToString();
        int din = x.Dim(1), dout = module.DOut, r = a.Dim(0), s = batch.Samples;
        if ((module.W0Int8?.Cols ?? w0.Dim(1)) != din)
            throw new ArgumentException($"{p}W0 {w0Text} must be [d_out, d_in] with d_in = {din} from x {x}", p + "W0");
        if (r < 1) throw new ArgumentException($"{p}A {a} has rank r = 0; r must be at least 1", p + "A");
        if (a.Dim(1) != din) throw new ArgumentException($"{p}A {a} must be [r, d_in] with d_in = {din} from x {x}", p + "A");
        if (a.DType != b.DType) throw new ArgumentException($"{p}A {a} and {p}B {b} must have the same dtype", p + "B");
        if (b.Dim(0) != dout || b.Dim(1) != r)
            throw new ArgumentException($"{p}B {b} must be [d_out, r] = [{dout}, {r}] from W0 {w0Text} and A {a}", p + "B");
        if (dy.Dim(0) != x.Dim(0) || dy.Dim(1) != dout)
            throw new ArgumentException($"{p}DY {dy} must be [T, d_out] = [{x.Dim(0)}, {dout}] from x {x} and W0 {w0Text}", p + "DY");
        if (!float.IsFinite(module.Scale)) throw new ArgumentOutOfRangeException(p + "Scale", module.Scale, "adapter scale must be finite");
        if (module.W0Int8 is null) inputs.Add((w0, p + "W0"));
        inputs.Add((a, p + "A")); inputs.Add((b, p + "B")); inputs.Add((dy, p + "DY"));
        if (module.G is { } g)
        {
            Check.F32(_backend, g, p + "G", 3);
            if (g.Dim(0) != s || g.Dim(1) != r || g.Dim(2) != r)
                throw new ArgumentException($"{p}G {g} must be [S, r, r] = [{s}, {r}, {r}] (one matrix per sample of the batch)", p + "G");
            inputs.Add((g, p + "G"));
        }
        if (module.DA is { } da)
        {
            Check.F32(_backend, da, p + "DA", 2);
            if (da.Dim(0) != r || da.Dim(1) != din) throw new ArgumentException($"{p}DA {da} must be [r, d_in] = [{r}, {din}] like A {a}", p + "DA");
            outputs.Add((da, p + "DA"));
        }
        if (module.DB is { } db)
        {
            Check.F32(_backend, db, p + "DB", 2);
            if (db.Dim(0) != dout || db.Dim(1) != r) throw new ArgumentException($"{p}DB {db} must be [d_out, r] = [{dout}, {r}] like B {b}", p + "DB");
            outputs.Add((db, p + "DB"));
        }
        if (module.DG is { } dg)
        {
            if (module.G is null)
                throw new ArgumentException($"{p}DG {dg} is requested but G is null (the identity of plain LoRA has no gradient)", p + "DG");
            Check.F32(_backend, dg, p + "DG", 3);
            if (dg.Dim(0) != s || dg.Dim(1) != r || dg.Dim(2) != r)
                throw new ArgumentException($"{p}DG {dg} must be [S, r, r] = [{s}, {r}, {r}] like G", p + "DG");
            outputs.Add((dg, p + "DG"));
        }
    }

    private void CheckModule(in Tensor x, in CfloraModule module, CfloraBatch batch, int index)
    {
        string p = $"modules[{index}].";
        var (w0, a, b, g, y) = (module.W0, module.A, module.B, module.G, module.Y);
        Check.Floating(_backend, w0, p + "W0", 2);
        Check.Floating(_backend, a, p + "A", 2);
        Check.Floating(_backend, b, p + "B", 2);
        Check.F32(_backend, g, p + "G", 3);
        Check.F32(_backend, y, p + "Y", 2);
        int din = x.Dim(1), dout = w0.Dim(0), r = a.Dim(0);
        if (w0.Dim(1) != din)
            throw new ArgumentException($"{p}W0 {w0} must be [d_out, d_in] with d_in = {din} from x {x}", p + "W0");
        if (r < 1) throw new ArgumentException($"{p}A {a} has rank r = 0; r must be at least 1", p + "A");
        if (a.Dim(1) != din) throw new ArgumentException($"{p}A {a} must be [r, d_in] with d_in = {din} from x {x}", p + "A");
        if (a.DType != b.DType) throw new ArgumentException($"{p}A {a} and {p}B {b} must have the same dtype", p + "B");
        if (b.Dim(0) != dout || b.Dim(1) != r)
            throw new ArgumentException($"{p}B {b} must be [d_out, r] = [{dout}, {r}] from W0 {w0} and A {a}", p + "B");
        if (g.Dim(0) != batch.Samples || g.Dim(1) != r || g.Dim(2) != r)
            throw new ArgumentException($"{p}G {g} must be [S, r, r] = [{batch.Samples}, {r}, {r}] (one matrix per sample of the batch)", p + "G");
        if (y.Dim(0) != x.Dim(0) || y.Dim(1) != dout)
            throw new ArgumentException($"{p}Y {y} must be [T, d_out] = [{x.Dim(0)}, {dout}]", p + "Y");
        if (module.Bias is { } bias)
        {
            Check.F32(_backend, bias, p + "Bias", 1);
            if (bias.Dim(0) != dout) throw new ArgumentException($"{p}Bias {bias} must be [d_out] = [{dout}]", p + "Bias");
            Check.NoOverlap(y, p + "Y", bias, p + "Bias");
        }
        if (!float.IsFinite(module.Scale)) throw new ArgumentOutOfRangeException(p + "Scale", module.Scale, "adapter scale must be finite");
        Check.NoOverlap(y, p + "Y", x, "x");
        Check.NoOverlap(y, p + "Y", w0, p + "W0");
        Check.NoOverlap(y, p + "Y", a, p + "A");
        Check.NoOverlap(y, p + "Y", b, p + "B");
        Check.NoOverlap(y, p + "Y", g, p + "G");
    }

    /// <summary>
    /// The adapter term alone, added onto an output the base layer wrote elsewhere:
    /// <c>y[t] += scale · B (G_sᵀ (A x[t]))</c>. With y from <see cref="Primitives.LinearInt8"/> first, this composes an int8
    /// base with an fp32 adapter, <c>y = dequant(W8 x8) + scale · B Gᵀ A x</c> (the adapter never sees the quantization).
    /// Costs 2·T·r·(d_in + d_out) + 2·T·r² FLOPs plus one pass over y.
    /// </summary>
    /// <param name="x">Input rows, f32 [T, d_in].</param>
    /// <param name="a">LoRA A [r, d_in]; f32, f16 or bf16 (same dtype as b).</param>
    /// <param name="b">LoRA B [d_out, r].</param>
    /// <param name="g">Interaction matrices f32 [S, r, r] (identity for vanilla LoRA).</param>
    /// <param name="scale">Adapter scale; finite.</param>
    /// <param name="batch">Which sample each row belongs to.</param>
    /// <param name="y">Output f32 [T, d_out], updated in place; must not overlap the inputs.</param>
    public void AddAdapter(Tensor x, Tensor a, Tensor b, Tensor g, float scale, CfloraBatch batch, Tensor y)
    {
        ArgumentNullException.ThrowIfNull(batch);
        Check.F32(_backend, x, nameof(x), 2); Check.F32(_backend, y, nameof(y), 2);
        Check.Floating(_backend, a, nameof(a), 2); Check.Floating(_backend, b, nameof(b), 2); Check.F32(_backend, g, nameof(g), 3);
        int din = x.Dim(1), dout = y.Dim(1), r = a.Dim(0);
        if (batch.Rows != x.Dim(0)) throw new ArgumentException($"the batch has {batch.Rows} rows but x {x} has {x.Dim(0)}", nameof(batch));
        if (r < 1 || a.Dim(1) != din) throw new ArgumentException($"a {a} must be [r, d_in] with r >= 1 and d_in = {din} from x {x}", nameof(a));
        if (a.DType != b.DType) throw new ArgumentException($"a {a} and b {b} must have the same dtype", nameof(b));
        if (b.Dim(0) != dout || b.Dim(1) != r) throw new ArgumentException($"b {b} must be [d_out, r] = [{dout}, {r}] from y {y} and a {a}", nameof(b));
        if (g.Dim(0) != batch.Samples || g.Dim(1) != r || g.Dim(2) != r)
            throw new ArgumentException($"g {g} must be [S, r, r] = [{batch.Samples}, {r}, {r}]", nameof(g));
        if (y.Dim(0) != x.Dim(0)) throw new ArgumentException($"y {y} must have one row per row of x {x}", nameof(y));
        if (!float.IsFinite(scale)) throw new ArgumentOutOfRangeException(nameof(scale), scale, "adapter scale must be finite");
        Check.NoOverlap(y, nameof(y), x, nameof(x)); Check.NoOverlap(y, nameof(y), a, nameof(a));
        Check.NoOverlap(y, nameof(y), b, nameof(b)); Check.NoOverlap(y, nameof(y), g, nameof(g));
        if (x.Dim(0) == 0) return;
        if (K is not ICfloraAdapterKernels k)
            throw new NotSupportedException($"the {_backend.Name} backend has no separate CFLoRA adapter kernel (needed for int8 base weights)");
        k.AddAdapter(x, a, b, g, scale, batch.RowIndexOn(_backend), y);
    }

    /// <summary>
    /// The CFLoRA generator for one adapted module, batched over samples:
    /// <c>G[s] = reshape(W2 · GELU(W1 · LayerNorm(h[s]) + b1) + b2, r, r)</c> (row-major, so G[s][i][j] = out[i·r + j]).
    /// </summary>
    /// <param name="h">CRM representation of each sample, f32 [S, d_h].</param>
    /// <param name="lnWeight">LayerNorm scale (<c>lora_gate.0.weight</c>), f32 [d_h].</param>
    /// <param name="lnBias">LayerNorm shift (<c>lora_gate.0.bias</c>), f32 [d_h].</param>
    /// <param name="lnEps">LayerNorm eps (PyTorch's default is 1e-5).</param>
    /// <param name="w1">First linear (<c>lora_gate.1.weight</c>), f32 [2r², d_h].</param>
    /// <param name="b1">Its bias, f32 [2r²].</param>
    /// <param name="w2">Second linear (<c>lora_gate.3.weight</c>), f32 [r², 2r²].</param>
    /// <param name="b2">Its bias, f32 [r²].</param>
    /// <param name="g">Output interaction matrices, f32 [S, r, r].</param>
    public void Generate(Tensor h, Tensor lnWeight, Tensor lnBias, float lnEps, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor g)
    {
        Check.F32(_backend, h, nameof(h), 2); Check.F32(_backend, lnWeight, nameof(lnWeight), 1); Check.F32(_backend, lnBias, nameof(lnBias), 1);
        Check.F32(_backend, w1, nameof(w1), 2); Check.F32(_backend, b1, nameof(b1), 1);
        Check.F32(_backend, w2, nameof(w2), 2); Check.F32(_backend, b2, nameof(b2), 1); Check.F32(_backend, g, nameof(g), 3);
        Check.Eps(lnEps);
        int s = h.Dim(0), dh = h.Dim(1), r = g.Dim(1), r2 = r * r;
        if (r < 1 || g.Dim(2) != r || g.Dim(0) != s)
            throw new ArgumentException($"g {g} must be [S, r, r] with r >= 1 and S = {s} from h {h}", nameof(g));
        Check.LastDim(lnWeight, nameof(lnWeight), h); Check.LastDim(lnBias, nameof(lnBias), h);
        if (w1.Dim(0) != 2 * r2 || w1.Dim(1) != dh)
            throw new ArgumentException($"w1 {w1} must be [2r², d_h] = [{2 * r2}, {dh}] for r = {r} and h {h}", nameof(w1));
        if (b1.Dim(0) != 2 * r2) throw new ArgumentException($"b1 {b1} must be [2r²] = [{2 * r2}]", nameof(b1));
        if (w2.Dim(0) != r2 || w2.Dim(1) != 2 * r2)
            throw new ArgumentException($"w2 {w2} must be [r², 2r²] = [{r2}, {2 * r2}] for r = {r}", nameof(w2));
        if (b2.Dim(0) != r2) throw new ArgumentException($"b2 {b2} must be [r²] = [{r2}]", nameof(b2));
        Check.NoOverlap(g, nameof(g), h, nameof(h));
        if (s == 0) return;
        K.Generate(h, lnWeight, lnBias, lnEps, w1, b1, w2, b2, g);
    }
}
