using Rellax.Kernels;

namespace Rellax.Runtime;

// The training half of BatchForward: the same layer forward (ForwardLayer) keeping its activations, and the backward
// through the frozen model into the adapter's gradients. Base weights are frozen, so every op computes only input
// gradients, and the parameter gradients are the adapter's (LoRA A/B, dG → generators, soft-token rows → projector).
internal sealed partial class BatchForward
{
    private Activations? _training;

    /// <summary>The adapter on the device (null for the bare model): the trainer refreshes and reads its tensors.</summary>
    public DeviceAdapter? Adapter => _adapter;

    /// <summary>Bytes of activations and backward scratch held for training (0 before the first training forward).</summary>
    public long TrainingBytes => _training is null ? 0 : _training.Bytes + _scratchBuffers.Sum(b => b.SizeInBytes);

    /// <summary>
    /// Forward for training: runs <paramref name="batch"/> keeping, per layer, its input, q, k, v (roped), the attention
    /// output and log-sum-exp, the mid-layer residual, gate and up; with <paramref name="recompute"/> only each layer's
    /// input is kept and the rest is recomputed by <see cref="Backward"/> (activation checkpointing). Returns the final
    /// residual [B·T, H] (not normed), valid until the next call.
    /// </summary>
    public Tensor TrainForward(in ForwardBatch batch, bool recompute)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _training ??= new Activations(this);
        _training.Prepare(batch.Sequences * batch.Tokens, batch.Sequences, batch.Tokens, recompute);
        var final = Run(batch, _training);
        _training.Batch = batch;
        return final;
    }

    /// <summary>
    /// The gradient buffer of the final residual for the batch of the last <see cref="TrainForward"/>, [B·T, H], zeroed:
    /// the loss head writes its rows, then <see cref="Backward"/> reads it.
    /// </summary>
    public Tensor FinalGradient()
    {
        var a = _training ?? throw new InvalidOperationException("TrainForward must run first");
        var dx = a.DX(_context!.Rows);
        a.Zero(dx);
        return dx;
    }

    /// <summary>
    /// Backward from <see cref="FinalGradient"/> (filled by the loss head) through every layer to the input embeddings,
    /// writing the gradients of the adapter's trained parts (<see cref="DeviceAdapter.EnableGradients"/>): each target's dA,
    /// dB and dG (then the generators' gradients), and the projector's. Returns whether the projector's gradients were
    /// written (false when the batch has no soft tokens: they are zero).
    /// </summary>
    public bool Backward()
    {
        var a = _training ?? throw new InvalidOperationException("TrainForward must run first");
        var ctx = _context!;
        var c = _model.Config;
        var w = _model.Weights;
        int rows = ctx.Rows, h = c.HiddenSize;
        var dx = a.DX(rows);
        float eps = (float)c.RmsNormEps;
        var bw = _backend.Backward;
        var xn = new Tensor(_scratch!.Normed, 0, rows, h);
        int hq = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, d = c.HeadDim, bs = ctx.Sequences, t = ctx.Tokens;

        for (int l = w.Layers.Length - 1; l >= 0; l--)
        {
            var L = w.Layers[l];
            var layer = a.Layer(l, rows, ctx);
            var x = a.Residual(l, rows);
            var hidden = a.Hidden(rows);
            if (a.Recompute) ForwardLayer(l, ctx, x, layer.Mid, a.Residual(l + 1, rows), layer.Tensors, layer.Lse, hidden);
            else _ops.SwiGlu(layer.Tensors.Gate, layer.Tensors.Up, hidden);
            var (q, k, v, o, gate, up) = layer.Tensors;

            // MLP: dx is ∂L/∂out; the residual passes it to mid unchanged, plus the branch's input gradient.
            var dHidden = a.DInter(rows, 0);
            var dUp = a.DInter(rows, 1);
            BackwardProject(hidden, l, ctx, dHidden, a.Tmp(rows, c.IntermediateSize), (LlamaModule.DownProj, L.Down, dx));
            bw.SwiGlu(gate, up, dHidden, dHidden, dUp);
            _ops.RmsNorm(layer.Mid, L.PostAttentionNorm.AsTensor(h), eps, xn);
            var dxn = a.DXn(rows);
            BackwardProject(xn, l, ctx, dxn, a.Tmp(rows, h), (LlamaModule.GateProj, L.Gate, dHidden), (LlamaModule.UpProj, L.Up, dUp));
            bw.RmsNorm(layer.Mid, L.PostAttentionNorm.AsTensor(h), eps, dxn, dxn);
            _ops.Add(dx, dxn, dx);

            // Attention: dx is now ∂L/∂mid.
            var dO = a.DQ(rows, 1);
            BackwardProject(o, l, ctx, dO, a.Tmp(rows, hq * d), (LlamaModule.OProj, L.O, dx));
            var dq = a.DQ(rows, 0);
            var (dk, dv) = (a.DKv(rows, 0), a.DKv(rows, 1));
            _backend.Attention.Backward(q.Reshape(bs, t, hq, d), k.Reshape(bs, t, hkv, d), v.Reshape(bs, t, hkv, d),
                o.Reshape(bs, t, hq, d), dO.Reshape(bs, t, hq, d), layer.Lse!.Value, ctx.Lengths,
                dq.Reshape(bs, t, hq, d), dk.Reshape(bs, t, hkv, d), dv.Reshape(bs, t, hkv, d), _attention);
            bw.Rope(dq.Reshape(rows, hq, d), ctx.Positions, ctx.Cos, ctx.Sin);
            bw.Rope(dk.Reshape(rows, hkv, d), ctx.Positions, ctx.Cos, ctx.Sin);
            _ops.RmsNorm(x, L.InputNorm.AsTensor(h), eps, xn);
            BackwardProject(xn, l, ctx, dxn, a.Tmp(rows, h),
                (LlamaModule.QProj, L.Q, dq), (LlamaModule.KProj, L.K, dk), (LlamaModule.VProj, L.V, dv));
            bw.RmsNorm(x, L.InputNorm.AsTensor(h), eps, dxn, dxn);
            _ops.Add(dx, dxn, dx);
        }

        if (_adapter is { } adapter)
        {
            if (adapter.Trained.HasFlag(Training.AdapterParts.Gate)) GeneratorBackward(adapter, a.Batch);
            if (adapter.ProjectorGrad is not null && a.SlotRows.Length > 0)
            {
                ProjectorBackward(adapter, a, dx);
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Input gradient of linear layers that read the same x, plus the adapter's gradients for the adapted ones:
    /// adapted modules through <see cref="CfloraLinear.Backward"/> (dA, dB, dG as enabled), frozen ones through
    /// <see cref="BackwardOps.LinearInput"/>; when both kinds are present the frozen part goes to <paramref name="tmp"/>
    /// and is added.
    /// </summary>
    private void BackwardProject(Tensor x, int layer, BatchContext ctx, Tensor dx, Tensor tmp,
        params ReadOnlySpan<(LlamaModule Module, LinearWeight W, Tensor DY)> inputs)
    {
        var adapted = new List<CfloraBackwardModule>();
        var frozen = new List<FrozenLinearTerm>();
        foreach (var (module, weight, dy) in inputs)
        {
            if (_adapter?.Find(layer, module) is { } target)
                adapted.Add(weight.AdaptedBackward(target.A, target.B, target.BackwardInteractions(ctx.Sequences), target.Scale, dy,
                    target.DA, target.DB, target.InteractionGradient(ctx.Sequences)));
            else frozen.Add(weight.Frozen(dy));
        }
        if (adapted.Count > 0) _backend.Cflora.Backward(x, adapted.ToArray(), ctx.Cflora!, dx);
        if (frozen.Count == 0) return;
        _backend.Backward.LinearInput(frozen.ToArray(), adapted.Count > 0 ? tmp : dx);
        if (adapted.Count > 0) _ops.Add(dx, tmp, dx);
    }

    /// <summary>
    /// The generators' gradients from each target's dG [B, r²]: G = W2 · GELU(W1 · LN(h) + b1) + b2, with the forward's
    /// intermediates recomputed (B · (d_h · 2r² + 2r⁴) MACs: tiny).
    /// </summary>
    private void GeneratorBackward(DeviceAdapter adapter, ForwardBatch batch)
    {
        int b = batch.Sequences, dh = adapter.InstanceDim, r2 = adapter.Rank * adapter.Rank;
        using var h = _backend.Upload<float>(batch.Instances);
        using var ln = _backend.Allocate(DType.F32, (long)b * dh);
        using var dLn = _backend.Allocate(DType.F32, (long)b * dh);
        using var dH = _backend.Allocate(DType.F32, (long)b * dh);
        using var pre = _backend.Allocate(DType.F32, (long)b * 2 * r2);
        using var mid = _backend.Allocate(DType.F32, (long)b * 2 * r2);
        using var dMid = _backend.Allocate(DType.F32, (long)b * 2 * r2);
        var hT = h.AsTensor(b, dh);
        var bw = _backend.Backward;
        foreach (var t in adapter.Targets)
        {
            if (t.Generator is not { } g || t.GeneratorGrad is not { } gg || t.InteractionGradient(b) is not { } dG) continue;
            _ops.LayerNorm(hT, g.LnWeight, g.LnBias, DeviceAdapter.GeneratorEps, ln.AsTensor(b, dh));
            _ops.Linear(ln.AsTensor(b, dh), g.W1, g.B1, pre.AsTensor(b, 2 * r2));
            _ops.Gelu(pre.AsTensor(b, 2 * r2), mid.AsTensor(b, 2 * r2));
            bw.LinearBackward(mid.AsTensor(b, 2 * r2), g.W2, dG.Reshape(b, r2), dMid.AsTensor(b, 2 * r2), gg.W2, gg.B2);
            bw.GeluBackward(pre.AsTensor(b, 2 * r2), dMid.AsTensor(b, 2 * r2), mid.AsTensor(b, 2 * r2));
            bw.LinearBackward(ln.AsTensor(b, dh), g.W1, mid.AsTensor(b, 2 * r2), dLn.AsTensor(b, dh), gg.W1, gg.B1);
            bw.LayerNormBackward(hT, g.LnWeight, DeviceAdapter.GeneratorEps, dLn.AsTensor(b, dh), dH.AsTensor(b, dh), gg.LnWeight, gg.LnBias);
        }
    }

    /// <summary>The projector's gradients from the soft-token rows of ∂L/∂(input embeddings).</summary>
    private void ProjectorBackward(DeviceAdapter adapter, Activations a, Tensor dx)
    {
        var p = adapter.Projector!;
        var pg = adapter.ProjectorGrad!;
        int n = a.SlotRows.Length, h = dx.Dim(1), e = p.W1.Dim(1);
        using var rows = _backend.Upload<int>(a.SlotRows);
        using var inputs = _backend.Upload<float>(a.SlotInputs);
        using var pre = _backend.Upload<float>(a.SlotPre);
        using var mid = _backend.Allocate(DType.F32, (long)n * h);
        using var dOut = _backend.Allocate(DType.F32, (long)n * h);
        using var dMid = _backend.Allocate(DType.F32, (long)n * h);
        var bw = _backend.Backward;
        _ops.Embedding(rows.AsTensor(n), dx, dOut.AsTensor(n, h));          // gather the soft-token rows of dx
        _ops.Gelu(pre.AsTensor(n, h), mid.AsTensor(n, h));
        bw.LinearBackward(mid.AsTensor(n, h), p.W2, dOut.AsTensor(n, h), dMid.AsTensor(n, h), pg.W2, pg.B2);
        bw.GeluBackward(pre.AsTensor(n, h), dMid.AsTensor(n, h), mid.AsTensor(n, h));
        bw.LinearBackward(inputs.AsTensor(n, e), p.W1, mid.AsTensor(n, h), null, pg.W1, pg.B1);
    }

    /// <summary>What every layer of one batch shares: ids, positions, RoPE tables, lengths and the CFLoRA row map.</summary>
    private sealed class BatchContext : IDisposable
    {
        public required int Rows, Sequences, Tokens;
        public required Tensor Ids, Positions, Cos, Sin;
        public required int[] Lengths;
        public required CfloraBatch? Cflora;

        /// <summary>What every layer reads: rows, positions, RoPE tables and the CFLoRA row map.</summary>
        public LayerInput Layer => new(Rows, Positions, Cos, Sin, Cflora);

        public static BatchContext Create(BatchForward owner, in ForwardBatch batch, Scratch s)
        {
            var c = owner._model.Config;
            var w = owner._model.Weights;
            int bs = batch.Sequences, t = batch.Tokens, rows = bs * t;
            var positions = new int[rows];
            for (int b = 0; b < bs; b++)
            {
                int pad = t - batch.Lengths[b];
                for (int i = pad; i < t; i++) positions[b * t + i] = i - pad;
            }
            s.Ids.CopyFrom<int>(batch.Ids);
            s.Positions.CopyFrom<int>(positions);
            return new BatchContext
            {
                Rows = rows, Sequences = bs, Tokens = t,
                Ids = new Tensor(s.Ids, 0, rows),
                Positions = new Tensor(s.Positions, 0, rows),
                Cos = w.RopeCos.AsTensor(c.MaxPositionEmbeddings, c.HeadDim / 2),
                Sin = w.RopeSin.AsTensor(c.MaxPositionEmbeddings, c.HeadDim / 2),
                Lengths = [.. batch.Lengths],
                Cflora = owner._adapter is null ? null : CfloraBatch.FromLengths(Enumerable.Repeat(t, bs).ToArray()),
            };
        }

        public void Dispose() => Cflora?.Dispose();
    }

    /// <summary>A layer's saved activations as views for the current batch.</summary>
    private readonly record struct SavedLayer(LayerTensors Tensors, Tensor Mid, Tensor? Lse);

    /// <summary>
    /// Training memory, grown to the largest batch seen: the residual before each layer and after the last
    /// (L + 1 × [rows, H]), per layer (or once, with recomputation) q, k, v, o, the log-sum-exp, mid, gate and up, and the
    /// backward's gradient buffers. Bytes per row without recomputation: 4·((2L + 1)·H + L·(2·Hq·D + 2·Hkv·D + 2·I + Hq))
    /// plus the backward's 4·(3·H + 2·I + 2·Hq·D + 2·Hkv·D + max(H, I, Hq·D)).
    /// </summary>
    private sealed class Activations(BatchForward owner) : IDisposable
    {
        private readonly List<DeviceBuffer> _buffers = [];
        private DeviceBuffer[] _residual = [], _mid = [], _q = [], _k = [], _v = [], _o = [], _lse = [], _gate = [], _up = [];
        private DeviceBuffer? _hidden, _dx, _dxn, _tmp, _dInter0, _dInter1, _dq0, _dq1, _dkv0, _dkv1;
        private int _capacity;
        private bool _recompute;
        private float[] _zeros = [];

        public bool Recompute => _recompute;
        public long Bytes => _buffers.Sum(b => b.SizeInBytes);
        public ForwardBatch Batch { get; set; }
        public int[] SlotRows { get; private set; } = [];
        public float[] SlotInputs { get; private set; } = [];
        public float[] SlotPre { get; private set; } = [];

        public void Prepare(int rows, int sequences, int tokens, bool recompute)
        {
            SlotRows = [];
            if (rows <= _capacity && recompute == _recompute) return;
            Free();
            _capacity = Math.Max(rows, _capacity);
            _recompute = recompute;
            var c = owner._model.Config;
            int layers = c.NumHiddenLayers, kept = recompute ? 1 : layers, cap = _capacity;
            long h = c.HiddenSize, inter = c.IntermediateSize, qw = (long)c.NumAttentionHeads * c.HeadDim, kvw = (long)c.NumKeyValueHeads * c.HeadDim;
            DeviceBuffer A(long n) { var b = owner._backend.Allocate(DType.F32, Math.Max(1, n)); _buffers.Add(b); return b; }
            DeviceBuffer[] Many(int count, long n) => [.. Enumerable.Range(0, count).Select(_ => A(n))];
            _residual = Many(layers + 1, cap * h);
            _mid = Many(kept, cap * h);
            _q = Many(kept, cap * qw);
            _k = Many(kept, cap * kvw);
            _v = Many(kept, cap * kvw);
            _o = Many(kept, cap * qw);
            _lse = Many(kept, (long)cap * c.NumAttentionHeads);
            _gate = Many(kept, cap * inter);
            _up = Many(kept, cap * inter);
            _hidden = A(cap * inter);
            _dx = A(cap * h);
            _dxn = A(cap * h);
            _tmp = A(cap * Math.Max(Math.Max(h, inter), qw));
            _dInter0 = A(cap * inter);
            _dInter1 = A(cap * inter);
            _dq0 = A(cap * qw);
            _dq1 = A(cap * qw);
            _dkv0 = A(cap * kvw);
            _dkv1 = A(cap * kvw);
        }

        public Tensor Residual(int i, int rows) => new(_residual[i], 0, rows, owner._model.Config.HiddenSize);

        public SavedLayer Layer(int l, int rows, BatchContext ctx)
        {
            var c = owner._model.Config;
            int i = _recompute ? 0 : l;
            int qw = c.NumAttentionHeads * c.HeadDim, kvw = c.NumKeyValueHeads * c.HeadDim;
            var tensors = new LayerTensors(new Tensor(_q[i], 0, rows, qw), new Tensor(_k[i], 0, rows, kvw), new Tensor(_v[i], 0, rows, kvw),
                new Tensor(_o[i], 0, rows, qw), new Tensor(_gate[i], 0, rows, c.IntermediateSize), new Tensor(_up[i], 0, rows, c.IntermediateSize));
            return new SavedLayer(tensors, new Tensor(_mid[i], 0, rows, c.HiddenSize), new Tensor(_lse[i], 0, ctx.Sequences, c.NumAttentionHeads, ctx.Tokens));
        }

        public Tensor Hidden(int rows) => new(_hidden!, 0, rows, owner._model.Config.IntermediateSize);
        public Tensor DX(int rows) => new(_dx!, 0, rows, owner._model.Config.HiddenSize);
        public Tensor DXn(int rows) => new(_dxn!, 0, rows, owner._model.Config.HiddenSize);
        public Tensor Tmp(int rows, int width) => new(_tmp!, 0, rows, width);
        public Tensor DInter(int rows, int which) => new(which == 0 ? _dInter0! : _dInter1!, 0, rows, owner._model.Config.IntermediateSize);
        public Tensor DQ(int rows, int which) => new(which == 0 ? _dq0! : _dq1!, 0, rows, owner._model.Config.NumAttentionHeads * owner._model.Config.HeadDim);
        public Tensor DKv(int rows, int which) => new(which == 0 ? _dkv0! : _dkv1!, 0, rows, owner._model.Config.NumKeyValueHeads * owner._model.Config.HeadDim);

        /// <summary>Keeps the projector's input and pre-GELU activations of this batch's soft tokens (host copies: small).</summary>
        public void KeepSlots(Tensor inputs, Tensor pre, int[] rows)
        {
            SlotRows = rows;
            SlotInputs = inputs.ToArray<float>();
            SlotPre = pre.ToArray<float>();
        }

        public void Zero(Tensor t)
        {
            long n = t.ElementCount;
            if (_zeros.Length < n) _zeros = new float[n];
            t.Buffer.CopyFrom<float>(_zeros.AsSpan(0, (int)n), t.Offset);
        }

        private void Free()
        {
            foreach (var b in _buffers) b.Dispose();
            _buffers.Clear();
            _capacity = 0;
        }

        public void Dispose() => Free();
    }
}
