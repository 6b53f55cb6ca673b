using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>
/// The attention step of one decoder layer, supplied by the caller of <see cref="LlamaLayer.Forward"/>: batched prefill
/// (<see cref="BatchForward"/>: <see cref="FlashAttention.Prefill(Tensor, Tensor, Tensor, ReadOnlySpan{int}, Tensor, AttentionOptions?)"/>
/// over the batch itself, left padding masked) or a session's KV cache (<see cref="LlamaSession"/>: the new rows attend to
/// every cached position, in f32 through <c>Prefill</c> with Tq &lt; Tk, in int8 through <c>Append</c> then <c>Decode</c>).
/// Implemented by structs, so the generic <see cref="LlamaLayer.Forward"/> calls it without boxing or a delegate.
/// </summary>
internal interface ILayerAttention
{
    /// <summary>
    /// Attention of the rows of <paramref name="q"/> into <paramref name="o"/>, token-major: q and o [rows, Hq, D],
    /// k and v [rows, Hkv, D] the same rows' keys (roped) and values, as the layer just projected them.
    /// </summary>
    void Attend(int layer, Tensor q, Tensor k, Tensor v, Tensor o);
}

/// <summary>What every layer of one forward pass shares: its row count, each row's position and the RoPE tables.</summary>
/// <param name="Rows">Rows of the residual stream (tokens, padding included).</param>
/// <param name="Positions">Position of each row [Rows] (int32), the RoPE index.</param>
/// <param name="Cos">RoPE cosines [max_positions, D/2].</param>
/// <param name="Sin">RoPE sines [max_positions, D/2].</param>
/// <param name="Cflora">The CFLoRA row map of the batch (rows → sample) when an adapter runs, else null.</param>
internal readonly record struct LayerInput(int Rows, Tensor Positions, Tensor Cos, Tensor Sin, CfloraBatch? Cflora);

/// <summary>One layer's projections and attention output, [rows, width] each (Q and O Hq·D wide, K and V Hkv·D, Gate and Up I).</summary>
internal readonly record struct LayerTensors(Tensor Q, Tensor K, Tensor V, Tensor O, Tensor Gate, Tensor Up);

/// <summary>
/// The one decoder layer of the runtime, run by generation (<see cref="LlamaSession"/>), scoring, embedding and training
/// (<see cref="BatchForward"/>), which differ only in the attention step they pass in (<see cref="ILayerAttention"/>) and
/// in where the tensors live:
/// <code>
/// xn = rmsnorm(xIn);  q, k, v = xn Wᵀ (+ b) (+ scale · B G_sᵀ A xn on adapted modules);  rope(q, k)
/// mid = xIn + o_proj(attend(q, k, v))
/// xn = rmsnorm(mid);  xOut = mid + down(silu(gate(xn)) · up(xn))                          (adapters likewise)
/// </code>
/// Adapted modules run through <see cref="CfloraLinear"/> (the fused kernel; plain LoRA uses identity G), the others
/// through their <see cref="LinearWeight"/>, so weights stay in their checkpoint dtype. Holds no buffers: the caller owns
/// every tensor; the adapter's device copy belongs to whoever passed it.
/// <para><b>Cost per row.</b> 2·(params of the layer) FLOPs in the linear layers, plus 2·r·(d_in + d_out) + 2r² per adapted
/// module; the attention step's cost is its own (see <see cref="FlashAttention"/>).</para>
/// </summary>
internal sealed class LlamaLayer(LlamaModel model, DeviceAdapter? adapter)
{
    private readonly LlamaConfig _config = model.Config;
    private readonly LlamaWeights _weights = model.Weights;
    private readonly ComputeBackend _backend = model.Backend;
    private readonly Primitives _ops = model.Backend.Primitives;

    /// <summary>
    /// Layer <paramref name="l"/> over <paramref name="input"/>.Rows rows. <paramref name="xIn"/>, <paramref name="mid"/>
    /// and <paramref name="xOut"/> [rows, H] may be one buffer (inference) or three (training, so the backward reads each).
    /// <paramref name="a"/> receives the projections (its K and V may be views of a KV cache); <paramref name="normed"/> and
    /// <paramref name="projected"/> [rows, H] are scratch; <paramref name="hidden"/> [rows, I] receives silu(gate) · up (it
    /// may be a.Gate itself when the gate need not be kept).
    /// </summary>
    public void Forward<TAttention>(int l, in LayerInput input, Tensor xIn, Tensor mid, Tensor xOut, in LayerTensors a,
        Tensor normed, Tensor projected, Tensor hidden, TAttention attention)
        where TAttention : ILayerAttention
    {
        var c = _config;
        var L = _weights.Layers[l];
        int rows = input.Rows, hq = c.NumAttentionHeads, hkv = c.NumKeyValueHeads, d = c.HeadDim, h = c.HiddenSize;
        float eps = (float)c.RmsNormEps;

        _ops.RmsNorm(xIn, L.InputNorm.AsTensor(h), eps, normed);
        Project(normed, l, input.Cflora,
            (LlamaModule.QProj, L.Q, L.QBias?.AsTensor(hq * d), a.Q),
            (LlamaModule.KProj, L.K, L.KBias?.AsTensor(hkv * d), a.K),
            (LlamaModule.VProj, L.V, L.VBias?.AsTensor(hkv * d), a.V));
        var q = a.Q.Reshape(rows, hq, d);
        var k = a.K.Reshape(rows, hkv, d);
        _ops.Rope(q, input.Positions, input.Cos, input.Sin);
        _ops.Rope(k, input.Positions, input.Cos, input.Sin);
        attention.Attend(l, q, k, a.V.Reshape(rows, hkv, d), a.O.Reshape(rows, hq, d));
        Project(a.O, l, input.Cflora, (LlamaModule.OProj, L.O, L.OBias?.AsTensor(h), projected));
        _ops.Add(xIn, projected, mid);

        _ops.RmsNorm(mid, L.PostAttentionNorm.AsTensor(h), eps, normed);
        Project(normed, l, input.Cflora,
            (LlamaModule.GateProj, L.Gate, null, a.Gate),
            (LlamaModule.UpProj, L.Up, null, a.Up));
        _ops.SwiGlu(a.Gate, a.Up, hidden);
        Project(hidden, l, input.Cflora, (LlamaModule.DownProj, L.Down, null, projected));
        _ops.Add(mid, projected, xOut);
    }

    /// <summary>
    /// Linear layers that read the same input: the adapted ones in one fused <see cref="CfloraLinear"/> call (x read
    /// once), the others through <see cref="LinearWeight.Apply"/>. With int8 base weights an adapted module runs the int8
    /// layer (<see cref="Primitives.LinearInt8"/>), then adds the fp32 adapter term (<see cref="CfloraLinear.AddAdapter"/>).
    /// </summary>
    private void Project(Tensor x, int layer, CfloraBatch? batch, params ReadOnlySpan<(LlamaModule Module, LinearWeight W, Tensor? Bias, Tensor Y)> outputs)
    {
        CfloraModule[]? list = null;
        int count = 0;
        foreach (var (module, weight, bias, y) in outputs)
        {
            var target = adapter?.Find(layer, module);
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
}
