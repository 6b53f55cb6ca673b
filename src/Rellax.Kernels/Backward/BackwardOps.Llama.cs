namespace Rellax.Kernels;

// The frozen Llama layer's dX-only backward ops (issue 17): the base weights never train, so these return only the
// gradient with respect to the activations. Ground truth: BackwardReference (BackwardReference.Llama.cs).
public sealed partial class BackwardOps
{
    /// <summary>
    /// Backward of <see cref="Primitives.RmsNorm"/> with the weight frozen: for each row of N,
    /// <c>dx = (w ⊙ dy)/rms − x · Σ_i (w_i dy_i x_i) / (N · rms³)</c>, rms = √(mean(x²) + eps).
    /// </summary>
    /// <param name="x">The forward's input, f32 [..., N].</param>
    /// <param name="weight">The forward's scale, f32 [N].</param>
    /// <param name="eps">The forward's eps.</param>
    /// <param name="dy">Gradient of the loss with respect to the output, same shape as x.</param>
    /// <param name="dx">Output, same shape as x; overwritten; may be dy itself (not x).</param>
    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx)
    {
        Check.F32(_backend, x, nameof(x)); Check.F32(_backend, weight, nameof(weight), 1);
        Check.F32(_backend, dy, nameof(dy)); Check.F32(_backend, dx, nameof(dx));
        Check.SameShape(x, nameof(x), dy, nameof(dy)); Check.SameShape(x, nameof(x), dx, nameof(dx));
        Check.LastDim(weight, nameof(weight), x);
        Check.Eps(eps);
        Check.NoOverlap(dx, nameof(dx), x, nameof(x)); Check.NoOverlap(dx, nameof(dx), weight, nameof(weight));
        CheckSameOrApart(dx, nameof(dx), dy, nameof(dy));
        if (x.ElementCount == 0) return;
        K.RmsNorm(x, weight, eps, dy, dx);
    }

    /// <summary>
    /// Input gradient of frozen linear layers that read the same x (q/k/v, gate/up; or one layer):
    /// <c>dx = Σ_m dY_m · W_m</c> for y_m = x W_mᵀ (+ bias), with W_m in f32, f16 or bf16 (widened exactly, fp32
    /// accumulation) or int8 (<see cref="FrozenLinearTerm.W8"/>: read as <c>scale_row ⊙ W8</c>, dequantized block by block
    /// while the GEMM packs it, so W is never held whole in f32). No weight or bias gradient: the base model is frozen.
    /// 2·T·d_in·Σd_out FLOPs, one GEMM over the K-concatenation <c>[dY_1 | … | dY_M] · [W_1; …; W_M]</c>, so dx is written
    /// once. For an int8 layer this is the straight-through gradient: that of the fp32 layer with the dequantized weight
    /// (the forward's activation quantization is treated as the identity, as QLoRA treats its weight dequantization).
    /// </summary>
    /// <param name="terms">The layers: each its gradient dY_m f32 [T, d_out_m] and its weight W_m [d_out_m, d_in] (dense or
    /// int8); at least one.</param>
    /// <param name="dx">Output f32 [T, d_in], overwritten; must not overlap any dY or W.</param>
    /// <exception cref="ArgumentException">A dtype, shape, backend or overlap that does not fit (named).</exception>
    public void LinearInput(ReadOnlySpan<FrozenLinearTerm> terms, Tensor dx)
    {
        if (terms.IsEmpty) throw new ArgumentException("at least one term is needed", nameof(terms));
        Check.F32(_backend, dx, nameof(dx), 2);
        for (int m = 0; m < terms.Length; m++)
        {
            var (dy, w) = (terms[m].DY, terms[m].W);
            string p = $"terms[{m}].";
            Check.F32(_backend, dy, p + "DY", 2);
            int dout, din;
            if (terms[m].W8 is { } w8)
            {
                ObjectDisposedException.ThrowIf(w8.IsDisposed, w8);
                if (!ReferenceEquals(w8.Backend, _backend))
                    throw new ArgumentException($"{p}W8 {w8} lives on backend '{w8.Backend.Name}', not '{_backend.Name}'", p + "W8");
                (dout, din) = (w8.Rows, w8.Cols);
            }
            else
            {
                Check.Floating(_backend, w, p + "W", 2);
                Check.NoOverlap(dx, nameof(dx), w, p + "W");
                (dout, din) = (w.Dim(0), w.Dim(1));
            }
            string wText = terms[m].W8?.ToString() ?? w.ToString();
            if (din != dx.Dim(1))
                throw new ArgumentException($"{p}W {wText} must be [d_out, d_in] with d_in = {dx.Dim(1)} from dx {dx}", p + "W");
            if (dy.Dim(0) != dx.Dim(0) || dy.Dim(1) != dout)
                throw new ArgumentException($"{p}DY {dy} must be [T, d_out] = [{dx.Dim(0)}, {dout}] from dx {dx} and W {wText}", p + "DY");
            Check.NoOverlap(dx, nameof(dx), dy, p + "DY");
        }
        if (dx.ElementCount == 0) return;
        K.LinearInput(terms, dx);
    }

    /// <summary>
    /// Backward of <see cref="Primitives.Rope"/>, in place: the rotation is orthogonal, so the gradient is rotated by
    /// the opposite angle, <c>(d1, d2) ← (d1·c + d2·s, d2·c − d1·s)</c> for each pair (i, i + D/2).
    /// </summary>
    /// <param name="dy">Gradient with respect to the rotated q or k, f32 [T, H, D] with D even; overwritten with the
    /// gradient with respect to the unrotated input.</param>
    /// <param name="positions">The forward's positions, i32 [T], each in [0, P).</param>
    /// <param name="cos">The forward's cos table, f32 [P, D/2].</param>
    /// <param name="sin">The forward's sin table, f32 [P, D/2].</param>
    public void Rope(Tensor dy, Tensor positions, Tensor cos, Tensor sin)
    {
        Check.Rope(_backend, dy, nameof(dy), positions, cos, sin);
        Check.NoOverlap(dy, nameof(dy), cos, nameof(cos)); Check.NoOverlap(dy, nameof(dy), sin, nameof(sin));
        if (dy.ElementCount == 0) return;
        K.Rope(dy, positions, cos, sin);
    }

    /// <summary>
    /// Backward of <see cref="Primitives.SwiGlu"/> (y = silu(g)·u): <c>dUp = dy · silu(g)</c> and
    /// <c>dGate = dy · u · σ(g) · (1 + g · (1 − σ(g)))</c>, elementwise.
    /// </summary>
    /// <param name="gate">The forward's gate, f32 [..., N].</param>
    /// <param name="up">The forward's up, same shape.</param>
    /// <param name="dy">Gradient with respect to y, same shape.</param>
    /// <param name="dGate">Output, same shape; overwritten; may be exactly gate, up or dy (each element is read before it
    /// is written), but not partly overlap any of them.</param>
    /// <param name="dUp">Output, same shape; the same rules; must not overlap dGate.</param>
    public void SwiGlu(Tensor gate, Tensor up, Tensor dy, Tensor dGate, Tensor dUp)
    {
        Check.F32(_backend, gate, nameof(gate)); Check.F32(_backend, up, nameof(up)); Check.F32(_backend, dy, nameof(dy));
        Check.F32(_backend, dGate, nameof(dGate)); Check.F32(_backend, dUp, nameof(dUp));
        Check.SameShape(gate, nameof(gate), up, nameof(up)); Check.SameShape(gate, nameof(gate), dy, nameof(dy));
        Check.SameShape(gate, nameof(gate), dGate, nameof(dGate)); Check.SameShape(gate, nameof(gate), dUp, nameof(dUp));
        Check.NoOverlap(dGate, nameof(dGate), dUp, nameof(dUp));
        foreach (var (output, outName) in new[] { (dGate, nameof(dGate)), (dUp, nameof(dUp)) })
        {
            CheckSameOrApart(output, outName, gate, nameof(gate));
            CheckSameOrApart(output, outName, up, nameof(up));
            CheckSameOrApart(output, outName, dy, nameof(dy));
        }
        if (gate.ElementCount == 0) return;
        K.SwiGlu(gate, up, dy, dGate, dUp);
    }

    /// <summary>An output may be exactly an input (elementwise in place) but must not partly overlap it.</summary>
    private static void CheckSameOrApart(in Tensor output, string outName, in Tensor input, string inName)
    {
        if (ReferenceEquals(output.Buffer, input.Buffer) && output.Offset == input.Offset) return;
        Check.NoOverlap(output, outName, input, inName);
    }
}
