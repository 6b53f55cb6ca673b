using System.Numerics.Tensors;

namespace Rellax.Runtime.Training;

/// <summary>Updates parameters from their gradients, one step at a time. Holds per-parameter state (moments).</summary>
public abstract class Optimizer
{
    /// <summary>Applies one update to every parameter with learning rate <paramref name="lr"/> (gradients are read, not cleared).</summary>
    /// <param name="parameters">The trained parameters, in the same order on every call.</param>
    /// <param name="lr">The learning rate of this step (after any schedule), finite and &gt;= 0.</param>
    public abstract void Step(IReadOnlyList<Parameter> parameters, float lr);

    /// <summary>An optimizer by name: <c>adamw</c> (<see cref="AdamW"/> with PyTorch's defaults) or <c>sgd</c> (<see cref="Sgd"/>).</summary>
    /// <exception cref="ArgumentException">Another name.</exception>
    public static Optimizer Create(string name, float weightDecay) => name switch
    {
        "adamw" => new AdamW(weightDecay),
        "sgd" => new Sgd(weightDecay),
        _ => throw new ArgumentException($"unknown optimizer '{name}' (adamw or sgd)", nameof(name)),
    };
}

/// <summary>
/// Plain SGD: <c>θ ← θ − lr·(g + λθ)</c> (λ = weight decay, usually 0). With lr = 1 and λ = 0 a step moves every
/// parameter by exactly minus its gradient, which is how the gradient tests check a whole model.
/// </summary>
/// <param name="weightDecay">λ (L2 added to the gradient), &gt;= 0.</param>
public sealed class Sgd(float weightDecay = 0) : Optimizer
{
    private readonly float _decay = weightDecay >= 0 && float.IsFinite(weightDecay) ? weightDecay : throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "weight decay must be finite and >= 0");

    /// <inheritdoc/>
    public override void Step(IReadOnlyList<Parameter> parameters, float lr)
    {
        foreach (var p in parameters)
        {
            if (_decay != 0 && p.WeightDecay) TensorPrimitives.Multiply(p.Value, 1 - lr * _decay, p.Value);
            TensorPrimitives.MultiplyAdd(p.Grad, -lr, p.Value, p.Value);
        }
    }
}

/// <summary>
/// AdamW (Loshchilov &amp; Hutter), as PyTorch's <c>torch.optim.AdamW</c>: with step count t,
/// <code>
/// θ ← θ (1 − lr·λ)                           decoupled weight decay (parameters with WeightDecay only)
/// m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²
/// θ ← θ − lr · (m / (1 − β1ᵗ)) / (sqrt(v / (1 − β2ᵗ)) + ε)
/// </code>
/// β1 = 0.9, β2 = 0.999, ε = 1e-8. Moments are dense (every element decays every step, as PyTorch's dense Adam does).
/// </summary>
public sealed class AdamW : Optimizer
{
    private readonly Dictionary<Parameter, (float[] M, float[] V)> _state = [];
    private const long ParallelElements = 1L << 22;
    private int _t;

    /// <summary>AdamW with weight decay λ.</summary>
    /// <param name="weightDecay">λ, finite and &gt;= 0 (PyTorch's default is 0.01).</param>
    public AdamW(float weightDecay = 0.01f)
    {
        if (!(weightDecay >= 0) || !float.IsFinite(weightDecay))
            throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "weight decay must be finite and >= 0");
        WeightDecay = weightDecay;
    }

    /// <summary>β1.</summary>
    public const float Beta1 = 0.9f;
    /// <summary>β2.</summary>
    public const float Beta2 = 0.999f;
    /// <summary>ε.</summary>
    public const float Epsilon = 1e-8f;

    /// <summary>λ.</summary>
    public float WeightDecay { get; }

    /// <inheritdoc/>
    public override void Step(IReadOnlyList<Parameter> parameters, float lr)
    {
        _t++;
        float c1 = 1 - MathF.Pow(Beta1, _t), c2 = 1 - MathF.Pow(Beta2, _t);
        float stepSize = lr / c1, invSqrtC2 = 1 / MathF.Sqrt(c2);
        foreach (var p in parameters)
            if (!_state.ContainsKey(p)) _state[p] = (new float[p.Length], new float[p.Length]);
        // Parameters are independent: update them in parallel when there is enough work to pay for the hand-off (about
        // 12 element passes each; a DIN's few hundred thousand elements take well under a millisecond on one core).
        long total = parameters.Sum(p => (long)p.Length);
        if (total < ParallelElements)
            foreach (var p in parameters) UpdateRange(p, _state[p].M, _state[p].V, lr, stepSize, invSqrtC2);
        else
            Parallel.ForEach(parameters, p => UpdateRange(p, _state[p].M, _state[p].V, lr, stepSize, invSqrtC2));
    }

    private void UpdateRange(Parameter p, float[] m, float[] v, float lr, float stepSize, float invSqrtC2)
    {
        var theta = p.Value.AsSpan();
        var g = p.Grad.AsSpan();
        if (WeightDecay != 0 && p.WeightDecay) TensorPrimitives.Multiply(theta, 1 - lr * WeightDecay, theta);
        const int block = 1024;
        Span<float> tmp = stackalloc float[block];
        for (int i = 0; i < theta.Length; i += block)
        {
            int n = Math.Min(block, theta.Length - i);
            var gi = g.Slice(i, n);
            var mi = m.AsSpan(i, n);
            var vi = v.AsSpan(i, n);
            var t = tmp[..n];
            // m = β1 m + (1 − β1) g
            TensorPrimitives.Multiply(mi, Beta1, mi);
            TensorPrimitives.MultiplyAdd(gi, 1 - Beta1, mi, mi);
            // v = β2 v + (1 − β2) g²
            TensorPrimitives.Multiply(gi, gi, t);
            TensorPrimitives.Multiply(vi, Beta2, vi);
            TensorPrimitives.MultiplyAdd(t, 1 - Beta2, vi, vi);
            // θ −= stepSize · m / (sqrt(v)/sqrt(c2) + ε)
            TensorPrimitives.Sqrt(vi, t);
            TensorPrimitives.Multiply(t, invSqrtC2, t);
            TensorPrimitives.Add(t, Epsilon, t);
            TensorPrimitives.Divide(mi, t, t);
            TensorPrimitives.MultiplyAdd(t, -stepSize, theta.Slice(i, n), theta.Slice(i, n));
        }
    }
}

/// <summary>Gradient clipping by global norm (PyTorch's <c>clip_grad_norm_</c>).</summary>
public static class GradientClipping
{
    /// <summary>
    /// The global L2 norm of every gradient, ‖g‖ = sqrt(Σ g²) (accumulated in double); when it exceeds
    /// <paramref name="maxNorm"/>, every gradient is scaled by maxNorm / (‖g‖ + 1e-6).
    /// </summary>
    /// <returns>The norm before clipping (NaN or ∞ when a gradient element is; nothing is scaled then).</returns>
    public static double ClipByGlobalNorm(IReadOnlyList<Parameter> parameters, double maxNorm)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (!(maxNorm > 0)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, "the clipping norm must be > 0");
        double sum = 0;
        foreach (var p in parameters) sum += TensorPrimitives.SumOfSquares(p.Grad);
        double norm = Math.Sqrt(sum);
        if (double.IsFinite(norm) && norm > maxNorm)
        {
            float scale = (float)(maxNorm / (norm + 1e-6));
            foreach (var p in parameters) TensorPrimitives.Multiply(p.Grad, scale, p.Grad);
        }
        return norm;
    }
}

/// <summary>
/// Linear decay with optional linear warm-up (HF <c>get_linear_schedule_with_warmup</c>): the factor of step t
/// (0-based) is t / W during the W warm-up steps, then (T − t) / (T − W), never below 0, for T total steps.
/// </summary>
/// <param name="totalSteps">T, at least 1.</param>
/// <param name="warmupSteps">W, in [0, T].</param>
public sealed class LinearSchedule(int totalSteps, int warmupSteps = 0)
{
    private readonly int _total = totalSteps >= 1 ? totalSteps : throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, "at least 1 step");
    private readonly int _warmup = warmupSteps >= 0 && warmupSteps <= totalSteps ? warmupSteps : throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, $"warm-up steps must be in [0, {totalSteps}]");

    /// <summary>The multiplier of the base learning rate at step <paramref name="step"/> (0-based).</summary>
    public float Factor(int step) => step < _warmup
        ? (float)step / _warmup
        : Math.Max(0f, (float)(_total - step) / Math.Max(1, _total - _warmup));
}
