using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>
/// One batch for <see cref="BatchForward"/>: B sequences left-padded to T tokens, row-major [B, T].
/// </summary>
/// <param name="Sequences">B.</param>
/// <param name="Tokens">T, the longest sequence.</param>
/// <param name="Ids">Token ids [B·T]; padding rows and SPA slots hold any valid id (they are overwritten or masked).</param>
/// <param name="Lengths">Real tokens per sequence [B], 1 to T; sequence b occupies rows b·T + T - Lengths[b] .. b·T + T - 1.</param>
/// <param name="SlotRows">Rows (in [0, B·T)) whose input embedding is a projected CRM embedding (SPA), distinct.</param>
/// <param name="SlotInputs">The CRM embeddings of those rows, row-major [SlotRows.Length, E].</param>
/// <param name="Instances">CRM vectors h_u, row-major [B, d_h], when the adapter has CFLoRA generators; else empty.</param>
internal readonly record struct ForwardBatch(int Sequences, int Tokens, int[] Ids, int[] Lengths, int[] SlotRows, float[] SlotInputs, float[] Instances);

/// <summary>
/// The batched, cache-free forward pass of a Llama-family model with an optional ReLLaX adapter, for scoring and
/// embedding (prefill only). Per layer:
/// <code>
/// xn = rmsnorm(x);  q, k, v = xn Wᵀ (+ b) (+ scale · B G_sᵀ A xn on adapted modules);  rope(q, k)
/// x += o_proj(FlashAttention.Prefill(q, k, v, lengths, causal))                       (token-major, left padding masked)
/// xn = rmsnorm(x);  x += down(silu(gate(xn)) · up(xn))                               (adapters likewise)
/// </code>
/// Adapted modules run through <see cref="CfloraLinear"/> (the fused kernel; plain LoRA uses identity G), the others
/// through <see cref="Primitives.Linear"/>, so weights stay in their checkpoint dtype. SPA slots are overwritten after
/// the embedding gather with <c>W2 GELU(W1 e + b1) + b2</c> (<see cref="Primitives.ScatterRows"/>).
/// <para><b>Cost.</b> Per token: 2·(params of the layers) FLOPs in the linear layers, plus attention
/// 4·T·Hq·D per token and layer (causal halves the useful part); the adapter adds 2·r·(d_in + d_out) + 2r² per adapted
/// module and token. Padding rows cost like real rows in the linear layers; callers sort by length to keep it small.
/// Activations: B·T·(3·H + 2·I + 2·Hq·D + 2·Hkv·D)·4 bytes.</para>
/// Not thread-safe; owns its scratch and the adapter's device copy.
/// </summary>
internal sealed class BatchForward : IDisposable
{
    private readonly LlamaModel _model;
    private readonly ComputeBackend _backend;
    private readonly Primitives _ops;
    private readonly DeviceAdapter? _adapter;
    private readonly AttentionOptions _attention;
    private readonly List<DeviceBuffer> _scratchBuffers = [];
    private Scratch? _scratch;
    private bool _disposed;

    public BatchForward(LlamaModel model, RellaxAdapter? adapter, AttentionPrecision attention)
    {
        _model = model;
        _backend = model.Backend;
        _ops = _backend.Primitives;
        var c = model.Config;
        if (c.HeadDim % FlashAttention.HeadDimMultiple != 0 || c.HeadDim > FlashAttention.MaxHeadDim)
            throw new NotSupportedException($"batched scoring runs on FlashAttention, which needs a head dimension that is a multiple of " +
                $"{FlashAttention.HeadDimMultiple} up to {FlashAttention.MaxHeadDim}; {c.SourceName} has head_dim {c.HeadDim}");
        _attention = new AttentionOptions
        {
            Precision = attention, Layout = AttentionLayout.TokenMajor, Scale = 1f / MathF.Sqrt(c.HeadDim), Causal = true,
        };
        _adapter = adapter is null ? null : new DeviceAdapter(adapter, _backend);
    }

    /// <summary>
    /// Runs <paramref name="batch"/> and returns the final-normed hidden state of each sequence's last token, [B, H]
    /// (a view of scratch memory, valid until the next call).
    /// </summary>
    public Tensor LastHidden(in ForwardBatch batch)
    {
        var x = Run(batch);
        var s = _scratch!;
        int b = batch.Sequences, t = batch.Tokens, h = _model.Config.HiddenSize;
        var lastRows = new int[b];
        for (int i = 0; i < b; i++) lastRows[i] = i * t + t - 1;
        var rows = new Tensor(s.Rows, 0, b);
        s.Rows.CopyFrom<int>(lastRows);
        var last = new Tensor(s.Projected, 0, b, h);
        _ops.Embedding(rows, x, last);                      // gather rows b·T + T - 1
        var normed = new Tensor(s.Normed, 0, b, h);
        _ops.RmsNorm(last, _model.Weights.FinalNorm.AsTensor(h), (float)_model.Config.RmsNormEps, normed);
        return normed;
    }

    /// <summary>Runs <paramref name="batch"/> and returns every row's final-normed hidden state, [B·T, H] (scratch view).</summary>
    public Tensor AllHidden(in ForwardBatch batch)
    {
        var x = Run(batch);
        var normed = new Tensor(_scratch!.Normed, 0, x.Dim(0), x.Dim(1));
        _ops.RmsNorm(x, _model.Weights.FinalNorm.AsTensor(x.Dim(1)), (float)_model.Config.RmsNormEps, normed);
        return normed;
    }

    /// <summary>The logits of <paramref name="tokenIds"/> for each row of <paramref name="hidden"/> [B, H]: host [B, ids.Length].</summary>
    public float[] Logits(Tensor hidden, ReadOnlySpan<int> tokenIds)
    {
        var c = _model.Config;
        int b = hidden.Dim(0), n = tokenIds.Length;
        using var idBuffer = _backend.Upload(tokenIds);
        using var rows = _backend.Allocate(DType.F32, (long)n * c.HiddenSize);
        using var logits = _backend.Allocate(DType.F32, (long)b * n);
        _model.Weights.LmHead.Gather(_ops, idBuffer.AsTensor(n), rows.AsTensor(n, c.HiddenSize));
        _ops.Linear(hidden, rows.AsTensor(n, c.HiddenSize), null, logits.AsTensor(b, n));
        return logits.AsTensor(b * n).ToArray<float>();
    }

    /// <summary>The residual stream [B·T, H] after every layer (not normed).</summary>
    private Tensor Run(in ForwardBatch batch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = _model.Config;
        var w = _model.Weights;
        int bs = batch.Sequences, t = batch.Tokens, rows = bs * t;
        int hq = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, d = c.HeadDim, hidden = c.HiddenSize, inter = c.IntermediateSize;
        var s = EnsureScratch(rows, bs);

        var positions = new int[rows];
        for (int b = 0; b < bs; b++)
        {
            int pad = t - batch.Lengths[b];
            for (int i = pad; i < t; i++) positions[b * t + i] = i - pad;
        }
        s.Ids.CopyFrom<int>(batch.Ids);
        s.Positions.CopyFrom<int>(positions);
        var ids = new Tensor(s.Ids, 0, rows);
        var pos = new Tensor(s.Positions, 0, rows);
        var x = new Tensor(s.Residual, 0, rows, hidden);
        var xn = new Tensor(s.Normed, 0, rows, hidden);
        var q = new Tensor(s.Query, 0, rows, hq * d);
        var k = new Tensor(s.Key, 0, rows, hkv * d);
        var v = new Tensor(s.Value, 0, rows, hkv * d);
        var attn = new Tensor(s.AttentionOut, 0, rows, hq * d);
        var proj = new Tensor(s.Projected, 0, rows, hidden);
        var gate = new Tensor(s.Gate, 0, rows, inter);
        var up = new Tensor(s.Up, 0, rows, inter);
        var cos = w.RopeCos.AsTensor(c.MaxPositionEmbeddings, d / 2);
        var sin = w.RopeSin.AsTensor(c.MaxPositionEmbeddings, d / 2);

        w.Embedding.Gather(_ops, ids, x);
        if (batch.SlotRows.Length > 0) ScatterSlots(batch, x);

        using var cfloraBatch = _adapter is null ? null : CfloraBatch.FromLengths(Enumerable.Repeat(t, bs).ToArray());
        _adapter?.PrepareInteractions(batch);

        for (int l = 0; l < w.Layers.Length; l++)
        {
            var L = w.Layers[l];
            _ops.RmsNorm(x, L.InputNorm.AsTensor(hidden), (float)c.RmsNormEps, xn);
            Project(xn, l, cfloraBatch,
                (LlamaModule.QProj, L.Q, L.QBias?.AsTensor(hq * d), q),
                (LlamaModule.KProj, L.K, L.KBias?.AsTensor(hkv * d), k),
                (LlamaModule.VProj, L.V, L.VBias?.AsTensor(hkv * d), v));
            _ops.Rope(q.Reshape(rows, hq, d), pos, cos, sin);
            _ops.Rope(k.Reshape(rows, hkv, d), pos, cos, sin);
            _backend.Attention.Prefill(q.Reshape(bs, t, hq, d), k.Reshape(bs, t, hkv, d), v.Reshape(bs, t, hkv, d),
                batch.Lengths, attn.Reshape(bs, t, hq, d), _attention);
            Project(attn, l, cfloraBatch, (LlamaModule.OProj, L.O, L.OBias?.AsTensor(hidden), proj));
            _ops.Add(x, proj, x);

            _ops.RmsNorm(x, L.PostAttentionNorm.AsTensor(hidden), (float)c.RmsNormEps, xn);
            Project(xn, l, cfloraBatch,
                (LlamaModule.GateProj, L.Gate, null, gate),
                (LlamaModule.UpProj, L.Up, null, up));
            _ops.SwiGlu(gate, up, gate);
            Project(gate, l, cfloraBatch, (LlamaModule.DownProj, L.Down, null, proj));
            _ops.Add(x, proj, x);
        }
        return x;
    }

    /// <summary>
    /// Linear layers that read the same input: the adapted ones in one fused <see cref="CfloraLinear"/> call (x read
    /// once), the others through <see cref="Primitives.Linear"/>. With int8 base weights an adapted module runs the int8
    /// layer (<see cref="Primitives.LinearInt8"/>), then adds the fp32 adapter term (<see cref="CfloraLinear.AddAdapter"/>).
    /// </summary>
    private void Project(Tensor x, int layer, CfloraBatch? batch, params ReadOnlySpan<(LlamaModule Module, LinearWeight W, Tensor? Bias, Tensor Y)> outputs)
    {
        CfloraModule[]? list = null;
        int count = 0;
        foreach (var (module, weight, bias, y) in outputs)
        {
            var target = _adapter?.Find(layer, module);
            if (target is null || weight.Int8 is not null)
            {
                weight.Apply(_ops, x, bias, y);
                if (target is not null)
                    _backend.Cflora.AddAdapter(x, target.A, target.B, target.InteractionsFor(batch!.Samples), target.Scale, batch, y);
            }
            else
            {
                list ??= new CfloraModule[outputs.Length];
                list[count++] = new CfloraModule(weight.Tensor, bias, target.A, target.B, target.InteractionsFor(batch!.Samples), target.Scale, y);
            }
        }
        if (count > 0) _backend.Cflora.Forward(x, list.AsSpan(0, count), batch!);
    }

    /// <summary>SPA: project the slots' CRM embeddings and write them over the slot rows of x.</summary>
    private void ScatterSlots(in ForwardBatch batch, Tensor x)
    {
        var projector = _adapter?.Projector ?? throw new InvalidOperationException("SPA slots without a projector (checked by the caller)");
        int n = batch.SlotRows.Length, e = projector.W1.Dim(1), h = x.Dim(1);
        using var inputs = _backend.Upload<float>(batch.SlotInputs);
        using var rows = _backend.Upload<int>(batch.SlotRows);
        using var mid = _backend.Allocate(DType.F32, (long)n * h);
        using var output = _backend.Allocate(DType.F32, (long)n * h);
        var midT = mid.AsTensor(n, h);
        _ops.Linear(inputs.AsTensor(n, e), projector.W1, projector.B1, midT);
        _ops.Gelu(midT, midT);
        _ops.Linear(midT, projector.W2, projector.B2, output.AsTensor(n, h));
        _ops.ScatterRows(output.AsTensor(n, h), rows.AsTensor(n), x);
    }

    /// <summary>Activation buffers for batches of up to <see cref="RowCapacity"/> rows.</summary>
    private sealed class Scratch
    {
        public required int RowCapacity { get; init; }
        public required DeviceBuffer Ids, Positions, Rows, Residual, Normed, Query, Key, Value, AttentionOut, Projected, Gate, Up;
    }

    private Scratch EnsureScratch(int rows, int sequences)
    {
        if (_scratch is { } existing && existing.RowCapacity >= rows && existing.Rows.Length >= sequences) return existing;
        foreach (var b in _scratchBuffers) b.Dispose();
        _scratchBuffers.Clear();
        _scratch = null;
        var c = _model.Config;
        int cap = Math.Max(rows, sequences);
        DeviceBuffer A(DType dtype, long n) { var b = _backend.Allocate(dtype, n); _scratchBuffers.Add(b); return b; }
        long qw = (long)c.NumAttentionHeads * c.HeadDim, kvw = (long)c.NumKeyValueHeads * c.HeadDim;
        _scratch = new Scratch
        {
            RowCapacity = cap,
            Ids = A(DType.I32, cap),
            Positions = A(DType.I32, cap),
            Rows = A(DType.I32, cap),
            Residual = A(DType.F32, cap * (long)c.HiddenSize),
            Normed = A(DType.F32, cap * (long)c.HiddenSize),
            Query = A(DType.F32, cap * qw),
            Key = A(DType.F32, cap * kvw),
            Value = A(DType.F32, cap * kvw),
            AttentionOut = A(DType.F32, cap * qw),
            Projected = A(DType.F32, cap * (long)c.HiddenSize),
            Gate = A(DType.F32, cap * (long)c.IntermediateSize),
            Up = A(DType.F32, cap * (long)c.IntermediateSize),
        };
        return _scratch;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _scratchBuffers) b.Dispose();
        _scratchBuffers.Clear();
        _adapter?.Dispose();
    }
}

/// <summary>
/// A <see cref="RellaxAdapter"/> on a backend: A and B of every target, the generators, the projector, and the
/// per-batch interaction matrices G [B, r, r] (generated from the batch's h_u, or identity for plain LoRA).
/// </summary>
internal sealed class DeviceAdapter : IDisposable
{
    private readonly List<DeviceBuffer> _owned = [];
    private readonly Dictionary<(int Layer, LlamaModule Module), Target> _targets = [];
    private readonly int _rank;
    private DeviceBuffer? _identity;          // [capacity, r, r] identity matrices (plain LoRA)
    private int _capacity;

    public DeviceAdapter(RellaxAdapter adapter, ComputeBackend backend)
    {
        Backend = backend;
        _rank = adapter.Config.Rank;
        InstanceDim = adapter.Config.InstanceDim ?? 0;
        try
        {
            foreach (var t in adapter.Targets)
            {
                Generator? g = t.Generator is { } gw
                    ? new Generator(Up(gw.LnWeight, gw.LnWeight.Length), Up(gw.LnBias, gw.LnBias.Length),
                        Up(gw.W1, 2 * _rank * _rank, gw.LnWeight.Length), Up(gw.B1, 2 * _rank * _rank),
                        Up(gw.W2, _rank * _rank, 2 * _rank * _rank), Up(gw.B2, _rank * _rank))
                    : null;
                _targets[(t.Layer, t.Module)] = new Target(this, Up(t.A, _rank, t.InFeatures), Up(t.B, t.OutFeatures, _rank), adapter.Config.Scale, g);
            }
            if (adapter.Projector is { } p)
            {
                int h = p.B1.Length, e = p.W1.Length / h;
                Projector = new ProjectorTensors(Up(p.W1, h, e), Up(p.B1, h), Up(p.W2, h, h), Up(p.B2, h));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public ComputeBackend Backend { get; }

    /// <summary>d_h of the generators' input (0 without generators).</summary>
    public int InstanceDim { get; }

    public ProjectorTensors? Projector { get; }

    public Target? Find(int layer, LlamaModule module) => _targets.GetValueOrDefault((layer, module));

    private Tensor Up(float[] data, params ReadOnlySpan<int> shape)
    {
        var buffer = Backend.Upload<float>(data);
        _owned.Add(buffer);
        return buffer.AsTensor(shape);
    }

    /// <summary>Makes every target's G [B, r, r] for this batch: the generator applied to the batch's h_u, or identity.</summary>
    public void PrepareInteractions(in ForwardBatch batch)
    {
        int b = batch.Sequences, r2 = _rank * _rank;
        if (b > _capacity)
        {
            _capacity = Math.Max(b, 2 * _capacity);
            foreach (var t in _targets.Values) t.Allocate(_capacity);
            if (_identity is not null) { _owned.Remove(_identity); _identity.Dispose(); }
            _identity = Backend.Upload<float>(CfloraInteractions.Identity(_capacity, _rank));
            _owned.Add(_identity);
        }
        if (_targets.Values.Any(t => t.Generator is not null))
        {
            using var h = Backend.Upload<float>(batch.Instances);
            var hT = h.AsTensor(b, InstanceDim);
            foreach (var t in _targets.Values)
            {
                var g = t.Generator!;
                Backend.Cflora.Generate(hT, g.LnWeight, g.LnBias, 1e-5f, g.W1, g.B1, g.W2, g.B2, t.G!.AsTensor(_capacity * r2).Slice(0, b * r2).Reshape(b, _rank, _rank));
            }
        }
    }

    public void Dispose()
    {
        foreach (var t in _targets.Values) t.G?.Dispose();
        foreach (var b in _owned) b.Dispose();
        _owned.Clear();
    }

    /// <summary>One adapted module on the device.</summary>
    internal sealed class Target(DeviceAdapter owner, Tensor a, Tensor b, float scale, Generator? generator)
    {
        public Tensor A { get; } = a;
        public Tensor B { get; } = b;
        public float Scale { get; } = scale;
        public Generator? Generator { get; } = generator;

        /// <summary>This target's generated G [capacity, r, r] (CFLoRA only).</summary>
        public DeviceBuffer? G { get; private set; }

        public void Allocate(int capacity)
        {
            if (Generator is null) return;
            G?.Dispose();
            G = owner.Backend.Allocate(DType.F32, (long)capacity * owner._rank * owner._rank);
        }

        /// <summary>G for the first <paramref name="samples"/> samples of the current batch.</summary>
        public Tensor InteractionsFor(int samples)
        {
            int r = owner._rank;
            var source = G ?? owner._identity!;
            return new Tensor(source, 0, samples, r, r);
        }
    }

    internal sealed record Generator(Tensor LnWeight, Tensor LnBias, Tensor W1, Tensor B1, Tensor W2, Tensor B2);

    internal sealed record ProjectorTensors(Tensor W1, Tensor B1, Tensor W2, Tensor B2);
}
