namespace Rellax.Kernels;

// The backward ops of the CRM (DIN) and of the adapter heads (generator MLP, SPA projector): linear layers, ReLU, exact
// GELU, LayerNorm, embedding rows, DIN's target attention and weighted sum, and the sigmoid-BCE loss.
public sealed partial class BackwardOps
{
    /// <summary>
    /// Backward of the linear layer <c>y = x Wᵀ + b</c> (<see cref="Primitives.Linear"/> with f32 W): any of
    /// <c>dX = dY W</c>, <c>dW = dYᵀ X</c>, <c>db = Σ_rows dY</c>. Each is 2·M·N·K FLOPs (db: M·N adds).
    /// </summary>
    /// <param name="x">The layer's input, f32 [M, K].</param>
    /// <param name="w">The weight, f32 [N, K] (out × in).</param>
    /// <param name="dy">Gradient of the loss w.r.t. y, f32 [M, N].</param>
    /// <param name="dx">Output, f32 [M, K] (overwritten), or null when not needed.</param>
    /// <param name="dw">Output, f32 [N, K] (overwritten), or null.</param>
    /// <param name="db">Output, f32 [N] (overwritten), or null.</param>
    public void LinearBackward(Tensor x, Tensor w, Tensor dy, Tensor? dx, Tensor? dw, Tensor? db)
    {
        Check.F32(_backend, x, nameof(x), 2); Check.F32(_backend, w, nameof(w), 2); Check.F32(_backend, dy, nameof(dy), 2);
        int m = x.Dim(0), k = x.Dim(1), n = w.Dim(0);
        if (w.Dim(1) != k || dy.Dim(0) != m || dy.Dim(1) != n)
            throw new ArgumentException($"LinearBackward needs x [M, K], w [N, K], dy [M, N]; got x {x}, w {w}, dy {dy}", nameof(dy));
        if (dx is { } gx)
        {
            Check.F32(_backend, gx, nameof(dx), 2);
            Check.SameShape(x, nameof(x), gx, nameof(dx));
            Check.NoOverlap(gx, nameof(dx), dy, nameof(dy)); Check.NoOverlap(gx, nameof(dx), w, nameof(w));
        }
        if (dw is { } gw)
        {
            Check.F32(_backend, gw, nameof(dw), 2);
            Check.SameShape(w, nameof(w), gw, nameof(dw));
            Check.NoOverlap(gw, nameof(dw), dy, nameof(dy)); Check.NoOverlap(gw, nameof(dw), x, nameof(x));
        }
        if (db is { } gb)
        {
            Check.F32(_backend, gb, nameof(db), 1);
            if (gb.Dim(0) != n) throw new ArgumentException($"db {gb} must be [N] = [{n}] for w {w}", nameof(db));
            Check.NoOverlap(gb, nameof(db), dy, nameof(dy));
        }
        K.LinearBackward(x, w, dy, dx, dw, db);
    }

    /// <summary>Backward of ReLU: <c>dX = dY · [y &gt; 0]</c>, from the ReLU's output y (its input gives the same mask).</summary>
    /// <param name="y">The ReLU's output (or input), f32 [...].</param>
    /// <param name="dy">Gradient w.r.t. the output, same shape.</param>
    /// <param name="dx">Output, same shape; may be dy itself.</param>
    public void ReluBackward(Tensor y, Tensor dy, Tensor dx)
    {
        Check.F32(_backend, y, nameof(y)); Check.F32(_backend, dy, nameof(dy)); Check.F32(_backend, dx, nameof(dx));
        Check.SameShape(y, nameof(y), dy, nameof(dy)); Check.SameShape(y, nameof(y), dx, nameof(dx));
        if (y.ElementCount == 0) return;
        K.ReluBackward(y, dy, dx);
    }

    /// <summary>Backward of exact GELU <c>x Φ(x)</c>: <c>dX = dY · (Φ(x) + x φ(x))</c>.</summary>
    /// <param name="x">The GELU's input, f32 [...].</param>
    /// <param name="dy">Gradient w.r.t. the output, same shape.</param>
    /// <param name="dx">Output, same shape; may be dy itself.</param>
    public void GeluBackward(Tensor x, Tensor dy, Tensor dx)
    {
        Check.F32(_backend, x, nameof(x)); Check.F32(_backend, dy, nameof(dy)); Check.F32(_backend, dx, nameof(dx));
        Check.SameShape(x, nameof(x), dy, nameof(dy)); Check.SameShape(x, nameof(x), dx, nameof(dx));
        Check.NoOverlap(dx, nameof(dx), x, nameof(x));
        if (x.ElementCount == 0) return;
        K.GeluBackward(x, dy, dx);
    }

    /// <summary>
    /// Backward of <see cref="Primitives.LayerNorm"/> over the last axis (biased variance): with x̂ = (x − μ)/σ,
    /// <c>dγ = Σ_rows dY·x̂</c>, <c>dβ = Σ_rows dY</c>, <c>dX = (g − mean(g) − x̂·mean(g·x̂)) / σ</c> where g = dY·γ.
    /// μ and σ are recomputed from x (one extra pass over the row).
    /// </summary>
    /// <param name="x">The LayerNorm's input, f32 [..., N].</param>
    /// <param name="weight">γ, f32 [N].</param>
    /// <param name="eps">The forward's eps; finite and &gt;= 0.</param>
    /// <param name="dy">Gradient w.r.t. the output, same shape as x.</param>
    /// <param name="dx">Output, same shape as x (overwritten); must not overlap x.</param>
    /// <param name="dweight">Output dγ, f32 [N] (overwritten).</param>
    /// <param name="dbias">Output dβ, f32 [N] (overwritten).</param>
    public void LayerNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx, Tensor dweight, Tensor dbias)
    {
        Check.F32(_backend, x, nameof(x)); Check.F32(_backend, weight, nameof(weight), 1); Check.F32(_backend, dy, nameof(dy));
        Check.F32(_backend, dx, nameof(dx)); Check.F32(_backend, dweight, nameof(dweight), 1); Check.F32(_backend, dbias, nameof(dbias), 1);
        Check.SameShape(x, nameof(x), dy, nameof(dy)); Check.SameShape(x, nameof(x), dx, nameof(dx));
        Check.LastDim(weight, nameof(weight), x); Check.LastDim(dweight, nameof(dweight), x); Check.LastDim(dbias, nameof(dbias), x);
        Check.Eps(eps);
        Check.NoOverlap(dx, nameof(dx), x, nameof(x));
        K.LayerNormBackward(x, weight, eps, dy, dx, dweight, dbias);
    }

    /// <summary>
    /// Backward of an embedding lookup <c>y[i] = T[rows[i]]</c> as a sparse scatter-add: <c>dT[rows[i]] += dY[i]</c>. Only
    /// the rows used are touched (the caller clears them, or the whole table, between steps); repeated rows add up.
    /// </summary>
    /// <param name="rows">Table row of each lookup, i32 [n], each in [0, V).</param>
    /// <param name="dy">Gradient w.r.t. the looked-up rows, f32 [n, E].</param>
    /// <param name="dtable">Accumulated into, f32 [V, E].</param>
    /// <exception cref="ArgumentException">Also when a row is outside [0, V) (naming its position), before anything is written.</exception>
    public void EmbeddingBackward(Tensor rows, Tensor dy, Tensor dtable)
    {
        Check.Of(_backend, rows, nameof(rows), DType.I32, 1); Check.F32(_backend, dy, nameof(dy), 2); Check.F32(_backend, dtable, nameof(dtable), 2);
        if (dy.Dim(0) != rows.Dim(0) || dy.Dim(1) != dtable.Dim(1))
            throw new ArgumentException($"EmbeddingBackward needs rows [n], dy [n, E], dtable [V, E]; got rows {rows}, dy {dy}, dtable {dtable}", nameof(dy));
        Check.NoOverlap(dtable, nameof(dtable), dy, nameof(dy));
        if (dy.ElementCount == 0) return;
        K.EmbeddingBackward(rows, dy, dtable);
    }

    /// <summary>
    /// Backward of DIN's target interaction in the factored form the forward uses (<c>DinRunner</c>): the attention MLP's
    /// first layer sees [t; h; t − h; t ⊙ h], which it computes as a per-sample term in t plus a per-position product over
    /// <c>z_j = [h_j; t_b ⊙ h_j]</c> [2E]. Given dZ, this adds <c>dh_j += dz_j[:E] + t_b ⊙ dz_j[E:]</c> and
    /// <c>dt_b += Σ_j h_j ⊙ dz_j[E:]</c> over sample b's positions j ∈ [starts[b], starts[b+1]).
    /// </summary>
    /// <param name="target">t, f32 [B, E].</param>
    /// <param name="hist">h, f32 [P, E] (the samples' histories, ragged).</param>
    /// <param name="starts">i32 [B + 1]: sample b owns positions [starts[b], starts[b+1]); from 0, non-decreasing, to P.</param>
    /// <param name="dz">Gradient w.r.t. z, f32 [P, 2E].</param>
    /// <param name="dtarget">Accumulated into, f32 [B, E].</param>
    /// <param name="dhist">Accumulated into, f32 [P, E].</param>
    public void TargetInteractionBackward(Tensor target, Tensor hist, Tensor starts, Tensor dz, Tensor dtarget, Tensor dhist)
    {
        Check.F32(_backend, target, nameof(target), 2); Check.F32(_backend, hist, nameof(hist), 2);
        Check.F32(_backend, dz, nameof(dz), 2); Check.F32(_backend, dtarget, nameof(dtarget), 2); Check.F32(_backend, dhist, nameof(dhist), 2);
        int e = target.Dim(1);
        if (hist.Dim(1) != e || dz.Dim(0) != hist.Dim(0) || dz.Dim(1) != 2 * e)
            throw new ArgumentException($"TargetInteractionBackward needs target [B, E], hist [P, E], dz [P, 2E]; got target {target}, hist {hist}, dz {dz}", nameof(dz));
        Check.SameShape(target, nameof(target), dtarget, nameof(dtarget)); Check.SameShape(hist, nameof(hist), dhist, nameof(dhist));
        CheckStarts(starts, target.Dim(0), hist.Dim(0));
        Check.NoOverlap(dhist, nameof(dhist), dz, nameof(dz)); Check.NoOverlap(dtarget, nameof(dtarget), dz, nameof(dz));
        K.TargetInteractionBackward(target, hist, starts, dz, dtarget, dhist);
    }

    /// <summary>
    /// Backward of DIN's masked, unnormalised weighted sum <c>u_b = Σ_j s_j h_j</c> (j over sample b's real positions; padding
    /// is simply absent): <c>ds_j = du_b · h_j</c> (overwritten) and <c>dh_j += s_j du_b</c> (accumulated).
    /// </summary>
    /// <param name="scores">s, f32 [P].</param>
    /// <param name="hist">h, f32 [P, E].</param>
    /// <param name="starts">i32 [B + 1], as in <see cref="TargetInteractionBackward"/>.</param>
    /// <param name="du">Gradient w.r.t. u, f32 [B, E].</param>
    /// <param name="dscores">Output, f32 [P] (overwritten).</param>
    /// <param name="dhist">Accumulated into, f32 [P, E].</param>
    public void WeightedSumBackward(Tensor scores, Tensor hist, Tensor starts, Tensor du, Tensor dscores, Tensor dhist)
    {
        Check.F32(_backend, scores, nameof(scores), 1); Check.F32(_backend, hist, nameof(hist), 2); Check.F32(_backend, du, nameof(du), 2);
        Check.F32(_backend, dscores, nameof(dscores), 1); Check.F32(_backend, dhist, nameof(dhist), 2);
        if (scores.Dim(0) != hist.Dim(0) || du.Dim(1) != hist.Dim(1))
            throw new ArgumentException($"WeightedSumBackward needs scores [P], hist [P, E], du [B, E]; got scores {scores}, hist {hist}, du {du}", nameof(du));
        Check.SameShape(scores, nameof(scores), dscores, nameof(dscores)); Check.SameShape(hist, nameof(hist), dhist, nameof(dhist));
        CheckStarts(starts, du.Dim(0), hist.Dim(0));
        Check.NoOverlap(dhist, nameof(dhist), du, nameof(du)); Check.NoOverlap(dhist, nameof(dhist), hist, nameof(hist));
        K.WeightedSumBackward(scores, hist, starts, du, dscores, dhist);
    }

    /// <summary>
    /// The sigmoid binary cross-entropy on logits, in the numerically stable form
    /// <c>ℓ = max(z, 0) − z·y + log(1 + e^(−|z|))</c>, and its gradient <c>dz = scale · (σ(z) − y)</c>.
    /// </summary>
    /// <param name="logits">z, f32 [B].</param>
    /// <param name="labels">y, f32 [B], each 0 or 1 (soft labels in [0, 1] also work).</param>
    /// <param name="scale">Multiplies the gradient (1/B for the mean loss); finite.</param>
    /// <param name="dlogits">Output, f32 [B]; may be logits itself (read first).</param>
    /// <returns>The sum of ℓ over the batch, in double (not scaled); NaN or ∞ when a logit is.</returns>
    public double SigmoidBce(Tensor logits, Tensor labels, float scale, Tensor dlogits)
    {
        Check.F32(_backend, logits, nameof(logits), 1); Check.F32(_backend, labels, nameof(labels), 1); Check.F32(_backend, dlogits, nameof(dlogits), 1);
        Check.SameShape(logits, nameof(logits), labels, nameof(labels)); Check.SameShape(logits, nameof(logits), dlogits, nameof(dlogits));
        if (!float.IsFinite(scale)) throw new ArgumentOutOfRangeException(nameof(scale), scale, "scale must be finite");
        Check.NoOverlap(dlogits, nameof(dlogits), labels, nameof(labels));
        if (logits.ElementCount == 0) return 0;
        return K.SigmoidBce(logits, labels, scale, dlogits);
    }

    /// <summary>Checks a ragged-offsets tensor [B + 1] over P positions (values are read on the host for CPU tensors by the
    /// kernel; here only the shape).</summary>
    private void CheckStarts(in Tensor starts, int batch, int positions)
    {
        Check.Of(_backend, starts, nameof(starts), DType.I32, 1);
        if (starts.Dim(0) != batch + 1)
            throw new ArgumentException($"starts {starts} must be [B + 1] = [{batch + 1}] ({positions} positions)", nameof(starts));
    }
}
