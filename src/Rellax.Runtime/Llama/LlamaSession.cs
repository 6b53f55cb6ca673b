using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>
/// One token sequence being run through a <see cref="LlamaModel"/>: its KV cache (one per layer) and scratch
/// activations. Feed tokens in chunks with <see cref="Forward(ReadOnlySpan{int})"/>; each call appends to the cache, so
/// prefill then one-token decoding costs O(n) layer passes, not O(n²). Not thread-safe; dispose to free its device memory.
/// </summary>
/// <remarks>
/// <para>Each layer is the runtime's one <see cref="LlamaLayer"/>, the code scoring, embedding and training run too; the
/// session supplies only its attention step (the KV cache below) and its buffers: in f32 the layer's K and V
/// projections write straight into the cache rows of the new positions.</para>
/// <para>Every projection goes through <see cref="Primitives.Linear"/> (f32, f16 or bf16 weights, q/k/v/o biases when the
/// model has them) and the embedding gather reads the table in its dtype, so any checkpoint dtype generates.
/// Sliding-window attention (Mistral's <c>sliding_window</c>, Qwen2's with <c>use_sliding_window</c>) is not
/// implemented: up to the window every position sees all earlier keys, exactly as full attention, so sequences of at
/// most <c>sliding_window</c> tokens are exact and longer ones are refused (<see cref="NotSupportedException"/>).</para>
/// <para>The KV cache depends on <see cref="Attention"/>:</para>
/// <list type="bullet">
/// <item><see cref="AttentionPrecision.Fp32"/>: f32 keys and values, [maxPositions, Hkv·D] each per layer (token-major,
/// = [1, maxPositions, Hkv, D]); a chunk of t tokens after n cached ones runs <see cref="FlashAttention.Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, AttentionOptions?)"/>
/// with q [1, t, Hq, D] against cache rows [0, n + t) (fp32 scores). <c>8·D</c> bytes per position and KV head.</item>
/// <item><see cref="AttentionPrecision.Int8"/>: an <see cref="Int8KvCache"/> per layer (B = 1, Hkv, D, capacity =
/// maxPositions) filled by <see cref="FlashAttention.Append"/> and read by <see cref="FlashAttention.Decode"/>
/// (SageAttention-style int8 q·kᵀ, fp32 softmax and P·V, SPEC §7). <c>2·D + 12</c> bytes per position and KV head
/// (int8 key and value rows, an f32 key scale, an i32 key sum, an f32 value scale), plus the f32 smoothing mean
/// (Hkv·D per layer): about 4x smaller than f32 for D = 128 (268 against 1024 bytes), 2.3x for D = 8.
/// The keys' smoothing mean is fixed by the first <see cref="Forward(ReadOnlySpan{int})"/> after creation or
/// <see cref="Reset"/> (the prompt, in generation); it is exact under softmax whatever its value, and only decides
/// how well later keys use the int8 range.</item>
/// </list>
/// <para>Cost of attention per layer for a chunk of t new tokens after n cached ones: the scores and P·V are
/// 4·t·(n + t)·Hq·D FLOPs either way (int8 multiply-adds for the scores); a one-token decode step is memory-bound and
/// reads the whole cache, (n + 1)·Hkv·8·D bytes in f32 against (n + 1)·Hkv·(2·D + 12) in int8, so the int8 cache cuts
/// that traffic by the same factor as its size. Int8 adds one quantizing pass over the chunk's new K and V
/// (t·Hkv·D·8 bytes read) and over q.</para>
/// </remarks>
public sealed class LlamaSession : IDisposable
{
    private readonly LlamaModel _model;
    private readonly Primitives _ops;
    private readonly DeviceBuffer[] _keyCache = [], _valueCache = [];
    private readonly Int8KvCache[] _int8Cache = [];
    private readonly AttentionOptions _int8Options, _fp32Options;
    private readonly LlamaLayer _layer;
    private readonly List<DeviceBuffer> _scratchBuffers = [];
    private Scratch? _scratch;
    private bool _faulted, _disposed;

    internal LlamaSession(LlamaModel model, int maxPositions, AttentionPrecision attention)
    {
        _model = model;
        _ops = model.Backend.Primitives;
        _layer = new LlamaLayer(model, adapter: null);
        MaxPositions = maxPositions;
        Attention = attention;
        var c = model.Config;
        int kvWidth = c.NumKeyValueHeads * c.HeadDim;
        _int8Options = new AttentionOptions
        {
            Precision = AttentionPrecision.Int8, Layout = AttentionLayout.TokenMajor, Scale = 1f / MathF.Sqrt(c.HeadDim), Causal = true,
        };
        _fp32Options = _int8Options with { Precision = AttentionPrecision.Fp32 };
        try
        {
            if (attention == AttentionPrecision.Int8)
            {
                _int8Cache = new Int8KvCache[c.NumHiddenLayers];
                for (int i = 0; i < c.NumHiddenLayers; i++)
                    _int8Cache[i] = model.Backend.Attention.CreateKvCache(1, c.NumKeyValueHeads, c.HeadDim, maxPositions);
            }
            else
            {
                _keyCache = new DeviceBuffer[c.NumHiddenLayers];
                _valueCache = new DeviceBuffer[c.NumHiddenLayers];
                for (int i = 0; i < c.NumHiddenLayers; i++)
                {
                    _keyCache[i] = model.Backend.Allocate(DType.F32, maxPositions, kvWidth);
                    _valueCache[i] = model.Backend.Allocate(DType.F32, maxPositions, kvWidth);
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Capacity of the KV cache, in tokens.</summary>
    public int MaxPositions { get; }

    /// <summary>How attention scores are computed, and so which KV cache the session keeps (see the remarks).</summary>
    public AttentionPrecision Attention { get; }

    /// <summary>
    /// Bytes of device memory the KV cache holds, over all layers: <c>layers · maxPositions · Hkv · 8·D</c> for f32;
    /// <c>layers · (maxPositions · Hkv · (2·D + 12) + Hkv · D · 4 + 4)</c> for int8.
    /// </summary>
    public long KvCacheBytes => _keyCache.Concat(_valueCache).Sum(b => b.SizeInBytes) + _int8Cache.Sum(c => c.SizeInBytes);

    /// <summary>Number of tokens consumed so far (the position the next token will take).</summary>
    public int Position { get; private set; }

    /// <summary>Forgets all consumed tokens (the cache memory is kept; an int8 cache fixes its smoothing mean again).</summary>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        foreach (var cache in _int8Cache) cache.Reset();
        Position = 0;
        _faulted = false;
    }

    /// <summary>
    /// Runs <paramref name="tokens"/> (appended after the tokens already consumed) through the model and writes
    /// the next-token logits of the last of them into <paramref name="logits"/> (length vocab_size).
    /// </summary>
    /// <exception cref="ArgumentException">No tokens, or the logits span has the wrong length.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token id is outside the vocabulary, or the cache would overflow.</exception>
    /// <exception cref="NotSupportedException">The sequence would pass the model's <c>sliding_window</c>.</exception>
    public void Forward(ReadOnlySpan<int> tokens, Span<float> logits)
    {
        if (logits.Length != _model.Config.VocabSize)
            throw new ArgumentException($"logits must have vocab_size = {_model.Config.VocabSize} elements, got {logits.Length}", nameof(logits));
        var last = RunLayers(tokens);
        ComputeLogits(last, logits);
    }

    /// <summary>Like <see cref="Forward(ReadOnlySpan{int}, Span{float})"/>, returning a new logits array.</summary>
    public float[] Forward(ReadOnlySpan<int> tokens)
    {
        var logits = new float[_model.Config.VocabSize];
        Forward(tokens, logits);
        return logits;
    }

    /// <summary>
    /// Runs <paramref name="tokens"/> and returns the last layer's hidden states after the final norm (the
    /// input of <c>lm_head</c>) for every one of them, row-major [tokens.Length, hidden_size].
    /// </summary>
    public float[] ForwardHidden(ReadOnlySpan<int> tokens)
    {
        var h = RunLayers(tokens, normAll: true);
        return h.ToArray<float>();
    }

    /// <summary>The residual stream of the chunk after all layers; the last row (or all rows) final-normed.</summary>
    private Tensor RunLayers(ReadOnlySpan<int> tokens, bool normAll = false)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = _model.Config;
        int t = tokens.Length;
        if (t == 0) throw new ArgumentException("at least one token is needed", nameof(tokens));
        if (Position + t > MaxPositions)
            throw new ArgumentOutOfRangeException(nameof(tokens), t, $"{Position} + {t} tokens exceed the session's {MaxPositions} positions");
        if (c.SlidingWindow is int window && Position + t > window)
            throw new NotSupportedException($"{c.Architecture} uses sliding-window attention (sliding_window = {window}); positions " +
                $"from {window} on would attend only to the last {window} keys, which this runtime does not implement, so " +
                $"{Position} + {t} tokens are refused rather than computed with full attention");
        foreach (int id in tokens)
            if ((uint)id >= (uint)c.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), id, $"token id outside the vocabulary of {c.VocabSize}");
        if (_faulted)
            throw new InvalidOperationException("an earlier Forward failed after appending to the int8 KV cache; call Reset() before using the session again");

        var s = EnsureScratch(t);
        var w = _model.Weights;
        int hq = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, d = c.HeadDim, hidden = c.HiddenSize;
        int start = Position, end = Position + t;

        s.Ids.CopyFrom(tokens);
        Span<int> positions = t <= 1024 ? stackalloc int[t] : new int[t];
        for (int i = 0; i < t; i++) positions[i] = start + i;
        s.Positions.CopyFrom<int>(positions);

        var ids = new Tensor(s.Ids, 0, t);
        var x = new Tensor(s.Residual, 0, t, hidden);
        var xn = new Tensor(s.Normed, 0, t, hidden);
        var proj = new Tensor(s.Projected, 0, t, hidden);
        var gate = new Tensor(s.Gate, 0, t, c.IntermediateSize);
        var input = new LayerInput(t, new Tensor(s.Positions, 0, t),
            w.RopeCos.AsTensor(c.MaxPositionEmbeddings, d / 2), w.RopeSin.AsTensor(c.MaxPositionEmbeddings, d / 2), null);

        bool int8 = Attention == AttentionPrecision.Int8;
        w.Embedding.Gather(_ops, ids, x);
        for (int l = 0; l < w.Layers.Length; l++)
        {
            // fp32: the K and V projections write straight into the cache rows of the new positions.
            // int8: they go to scratch [t, Hkv·D] (= [1, t, Hkv, D], token-major), which Append quantizes into the cache.
            var (k, v) = int8
                ? (new Tensor(s.KeyNew!, 0, t, hkv * d), new Tensor(s.ValueNew!, 0, t, hkv * d))
                : (_keyCache[l].AsTensor(MaxPositions, hkv * d).Slice(start, t), _valueCache[l].AsTensor(MaxPositions, hkv * d).Slice(start, t));
            var a = new LayerTensors(new Tensor(s.Query, 0, t, hq * d), k, v, new Tensor(s.AttentionOut, 0, t, hq * d), gate, new Tensor(s.Up, 0, t, c.IntermediateSize));
            _layer.Forward(l, input, x, x, x, a, xn, proj, gate, new CachedAttention(this, end));
        }
        Position = end;

        var finalNorm = w.FinalNorm.AsTensor(hidden);
        if (normAll)
        {
            _ops.RmsNorm(x, finalNorm, (float)c.RmsNormEps, xn);
            return xn;
        }
        var lastRow = x.Slice(t - 1, 1);
        var lastNormed = xn.Slice(0, 1);
        _ops.RmsNorm(lastRow, finalNorm, (float)c.RmsNormEps, lastNormed);
        return lastNormed;
    }

    /// <summary>
    /// The session's attention step for a chunk of t new tokens (positions [Position, <paramref name="end"/>)), whose
    /// keys and values the layer has just projected: f32, they already sit in the cache rows, and the t queries attend
    /// causally to the cache's first <paramref name="end"/> rows through <see cref="FlashAttention.Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, AttentionOptions?)"/>
    /// with Tq = t &lt; Tk = end; int8, <see cref="Int8Attention"/> appends them to the layer's cache, then the queries
    /// attend to every cached position through <see cref="FlashAttention.Decode"/>.
    /// </summary>
    private readonly struct CachedAttention(LlamaSession session, int end) : ILayerAttention
    {
        public void Attend(int layer, Tensor q, Tensor k, Tensor v, Tensor o)
        {
            int t = q.Dim(0), hq = q.Dim(1), hkv = k.Dim(1), d = q.Dim(2);
            var attention = session._model.Backend.Attention;
            if (session.Attention == AttentionPrecision.Fp32)
            {
                var keys = session._keyCache[layer].AsTensor(session.MaxPositions, hkv * d).Slice(0, end).Reshape(1, end, hkv, d);
                var values = session._valueCache[layer].AsTensor(session.MaxPositions, hkv * d).Slice(0, end).Reshape(1, end, hkv, d);
                attention.Prefill(q.Reshape(1, t, hq, d), keys, values, default, o.Reshape(1, t, hq, d), session._fp32Options);
                return;
            }
            session.Int8Attention(session._int8Cache[layer], q.Reshape(1, t, hq, d), k.Reshape(1, t, hkv, d), v.Reshape(1, t, hkv, d),
                o.Reshape(1, t, hq, d));
        }
    }

    /// <summary>
    /// Int8 attention of one layer for a chunk of t tokens: appends k, v [1, t, Hkv, D] to the cache (positions
    /// [Position, Position + t)), then the t queries q [1, t, Hq, D] attend causally to every cached position into
    /// o [1, t, Hq, D]. A failure after an append leaves the caches ahead of <see cref="Position"/>: the session then
    /// refuses to run until <see cref="Reset"/> (or, when nothing had been consumed yet, resets itself).
    /// </summary>
    private void Int8Attention(Int8KvCache cache, Tensor q, Tensor k, Tensor v, Tensor o)
    {
        var attention = _model.Backend.Attention;
        try
        {
            attention.Append(cache, k, v, layout: AttentionLayout.TokenMajor);
            attention.Decode(q, cache, o, _int8Options);
        }
        catch
        {
            if (_int8Cache.Any(x => x.Count != Position))
            {
                if (Position == 0) foreach (var x in _int8Cache) x.Reset();
                else _faulted = true;
            }
            throw;
        }
    }

    private void ComputeLogits(Tensor lastNormed, Span<float> logits)
    {
        var c = _model.Config;
        var s = _scratch!;
        var outTensor = new Tensor(s.Logits, 0, 1, c.VocabSize);
        _model.Weights.LmHead.Apply(_ops, lastNormed, null, outTensor);
        s.Logits.CopyTo(logits);
    }

    /// <summary>Activation buffers for chunks of up to <see cref="Capacity"/> tokens, grown on demand.</summary>
    private sealed class Scratch
    {
        public required int Capacity { get; init; }
        public required DeviceBuffer Ids, Positions, Residual, Normed, Query, AttentionOut, Projected, Gate, Up, Logits;

        /// <summary>Int8 attention only: the chunk's roped keys and its values, [Capacity, Hkv·D] each, before quantization.</summary>
        public DeviceBuffer? KeyNew, ValueNew;
    }

    private Scratch EnsureScratch(int tokens)
    {
        if (_scratch is { } existing && existing.Capacity >= tokens) return existing;
        foreach (var b in _scratchBuffers) b.Dispose();
        _scratchBuffers.Clear();
        var c = _model.Config;
        var backend = _model.Backend;
        int cap = Math.Max(tokens, _scratch?.Capacity * 2 ?? 1);
        cap = Math.Min(Math.Max(cap, tokens), MaxPositions);
        DeviceBuffer A(DType dtype, long n) { var b = backend.Allocate(dtype, n); _scratchBuffers.Add(b); return b; }
        _scratch = new Scratch
        {
            Capacity = cap,
            Ids = A(DType.I32, cap),
            Positions = A(DType.I32, cap),
            Residual = A(DType.F32, (long)cap * c.HiddenSize),
            Normed = A(DType.F32, (long)cap * c.HiddenSize),
            Query = A(DType.F32, (long)cap * c.NumAttentionHeads * c.HeadDim),
            AttentionOut = A(DType.F32, (long)cap * c.NumAttentionHeads * c.HeadDim),
            Projected = A(DType.F32, (long)cap * c.HiddenSize),
            Gate = A(DType.F32, (long)cap * c.IntermediateSize),
            Up = A(DType.F32, (long)cap * c.IntermediateSize),
            Logits = A(DType.F32, c.VocabSize),
            KeyNew = Attention == AttentionPrecision.Int8 ? A(DType.F32, (long)cap * c.NumKeyValueHeads * c.HeadDim) : null,
            ValueNew = Attention == AttentionPrecision.Int8 ? A(DType.F32, (long)cap * c.NumKeyValueHeads * c.HeadDim) : null,
        };
        return _scratch;
    }

    /// <summary>Frees the KV cache and scratch memory.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _keyCache) b?.Dispose();
        foreach (var b in _valueCache) b?.Dispose();
        foreach (var cache in _int8Cache) cache?.Dispose();
        foreach (var b in _scratchBuffers) b.Dispose();
        _scratchBuffers.Clear();
    }
}
