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
/// The batched, cache-free forward pass of a Llama-family model with an optional ReLLaX adapter, for scoring,
/// embedding and training (prefill only). Each layer is the runtime's one <see cref="LlamaLayer"/> (generation's too)
/// with <see cref="FlashAttention.Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, AttentionOptions?)"/> over
/// the batch as its attention step:
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
internal sealed partial class BatchForward : IDisposable
{
    private readonly LlamaModel _model;
    private readonly ComputeBackend _backend;
    private readonly Primitives _ops;
    private readonly DeviceAdapter? _adapter;
    private readonly LlamaLayer _layer;
    private readonly AttentionOptions _attention;
    private readonly List<DeviceBuffer> _scratchBuffers = [];
    private Scratch? _scratch;
    private BatchContext? _context;
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
        _layer = new LlamaLayer(model, _adapter);
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
    private Tensor Run(in ForwardBatch batch) => Run(batch, null);

    /// <summary>
    /// The residual stream [B·T, H] after every layer. With <paramref name="saved"/> (training) every layer keeps what its
    /// backward needs (or, with recomputation, only its input), and the residual of each layer lives in its own buffer.
    /// </summary>
    private Tensor Run(in ForwardBatch batch, Activations? saved)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = _model.Config;
        var w = _model.Weights;
        int bs = batch.Sequences, t = batch.Tokens, rows = bs * t;
        var s = EnsureScratch(rows, bs);
        var ctx = BatchContext.Create(this, batch, s);
        _context?.Dispose();
        _context = ctx;

        var x = saved is null ? new Tensor(s.Residual, 0, rows, c.HiddenSize) : saved.Residual(0, rows);
        w.Embedding.Gather(_ops, ctx.Ids, x);
        if (batch.SlotRows.Length > 0) ScatterSlots(batch, x, saved);
        _adapter?.PrepareInteractions(batch);

        for (int l = 0; l < w.Layers.Length; l++)
        {
            if (saved is null)
            {
                ForwardLayer(l, ctx, x, x, x, ScratchTensors(s, rows), null, new Tensor(s.Gate, 0, rows, c.IntermediateSize));
                continue;
            }
            var layer = saved.Layer(l, rows, ctx);
            ForwardLayer(l, ctx, saved.Residual(l, rows), layer.Mid, saved.Residual(l + 1, rows), layer.Tensors, layer.Lse, saved.Hidden(rows));
        }
        return saved is null ? x : saved.Residual(w.Layers.Length, rows);
    }

    /// <summary>
    /// Layer <paramref name="l"/> of the batch (<see cref="LlamaLayer.Forward"/> with <see cref="PrefillAttention"/>). xIn,
    /// mid and xOut may be one buffer (inference) or three (training, so the backward reads each).
    /// <paramref name="hidden"/> receives silu(gate) · up (it may be the gate buffer itself when the gate need not be kept).
    /// With <paramref name="lse"/> attention saves its log-sum-exp.
    /// </summary>
    private void ForwardLayer(int l, BatchContext ctx, Tensor xIn, Tensor mid, Tensor xOut, LayerTensors a, Tensor? lse, Tensor hidden)
    {
        int rows = ctx.Rows, h = _model.Config.HiddenSize;
        _layer.Forward(l, ctx.Layer, xIn, mid, xOut, a, new Tensor(_scratch!.Normed, 0, rows, h), new Tensor(_scratch.Projected, 0, rows, h),
            hidden, new PrefillAttention(this, ctx, lse));
    }

    /// <summary>
    /// The batch's attention step: causal <see cref="FlashAttention.Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, AttentionOptions?)"/>
    /// over [B, T] with left padding masked by the lengths; with a log-sum-exp buffer [B, Hq, T] (training) it is saved.
    /// </summary>
    private readonly struct PrefillAttention(BatchForward owner, BatchContext ctx, Tensor? lse) : ILayerAttention
    {
        public void Attend(int layer, Tensor q, Tensor k, Tensor v, Tensor o)
        {
            int bs = ctx.Sequences, t = ctx.Tokens, hq = q.Dim(1), hkv = k.Dim(1), d = q.Dim(2);
            var attention = owner._backend.Attention;
            if (lse is { } saved)
                attention.Prefill(q.Reshape(bs, t, hq, d), k.Reshape(bs, t, hkv, d), v.Reshape(bs, t, hkv, d), ctx.Lengths,
                    o.Reshape(bs, t, hq, d), saved, owner._attention);
            else
                attention.Prefill(q.Reshape(bs, t, hq, d), k.Reshape(bs, t, hkv, d), v.Reshape(bs, t, hkv, d), ctx.Lengths,
                    o.Reshape(bs, t, hq, d), owner._attention);
        }
    }

    /// <summary>
    /// SPA: project the slots' CRM embeddings and write them over the slot rows of x. With <paramref name="saved"/> the
    /// projector's input and pre-GELU activations are kept for its backward.
    /// </summary>
    private void ScatterSlots(in ForwardBatch batch, Tensor x, Activations? saved)
    {
        var projector = _adapter?.Projector ?? throw new InvalidOperationException("SPA slots without a projector (checked by the caller)");
        int n = batch.SlotRows.Length, e = projector.W1.Dim(1), h = x.Dim(1);
        using var inputs = _backend.Upload<float>(batch.SlotInputs);
        using var rows = _backend.Upload<int>(batch.SlotRows);
        using var pre = _backend.Allocate(DType.F32, (long)n * h);
        using var mid = _backend.Allocate(DType.F32, (long)n * h);
        using var output = _backend.Allocate(DType.F32, (long)n * h);
        var preT = pre.AsTensor(n, h);
        var midT = mid.AsTensor(n, h);
        _ops.Linear(inputs.AsTensor(n, e), projector.W1, projector.B1, preT);
        _ops.Gelu(preT, midT);
        _ops.Linear(midT, projector.W2, projector.B2, output.AsTensor(n, h));
        _ops.ScatterRows(output.AsTensor(n, h), rows.AsTensor(n), x);
        saved?.KeepSlots(inputs.AsTensor(n, e), preT, batch.SlotRows);
    }

    /// <summary>Activation buffers for batches of up to <see cref="RowCapacity"/> rows.</summary>
    private sealed class Scratch
    {
        public required int RowCapacity { get; init; }
        public required DeviceBuffer Ids, Positions, Rows, Residual, Normed, Query, Key, Value, AttentionOut, Projected, Gate, Up;
    }

    /// <summary>The scratch projections of an inference pass as one layer's tensors.</summary>
    private LayerTensors ScratchTensors(Scratch s, int rows)
    {
        var c = _model.Config;
        return new(new Tensor(s.Query, 0, rows, c.NumAttentionHeads * c.HeadDim),
            new Tensor(s.Key, 0, rows, c.NumKeyValueHeads * c.HeadDim),
            new Tensor(s.Value, 0, rows, c.NumKeyValueHeads * c.HeadDim),
            new Tensor(s.AttentionOut, 0, rows, c.NumAttentionHeads * c.HeadDim),
            new Tensor(s.Gate, 0, rows, c.IntermediateSize),
            new Tensor(s.Up, 0, rows, c.IntermediateSize));
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
        _context?.Dispose();
        _training?.Dispose();
        _adapter?.Dispose();
    }
}
