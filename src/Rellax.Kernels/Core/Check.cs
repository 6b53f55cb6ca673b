namespace Rellax.Kernels;

/// <summary>Argument checks shared by the op fronts. Every message names the argument and the shapes involved.</summary>
internal static class Check
{
    public static void F32(ComputeBackend backend, in Tensor t, string name, int rank = 0) => Of(backend, t, name, DType.F32, rank);

    public static void Of(ComputeBackend backend, in Tensor t, string name, DType dtype, int rank = 0)
    {
        if (t.Buffer is null) throw new ArgumentNullException(name, $"{name} is a default (empty) Tensor");
        ObjectDisposedException.ThrowIf(t.Buffer.IsDisposed, t.Buffer);
        if (!ReferenceEquals(t.Backend, backend))
            throw new ArgumentException($"{name} {t} lives on backend '{t.Backend.Name}', not '{backend.Name}'", name);
        if (t.DType != dtype) throw new ArgumentException($"{name} must be {dtype.ToString().ToLowerInvariant()}, got {t}", name);
        if (rank != 0 && t.Rank != rank) throw new ArgumentException($"{name} must have rank {rank}, got {t}", name);
    }

    /// <summary>A weight tensor: f32, f16 or bf16.</summary>
    public static void Floating(ComputeBackend backend, in Tensor t, string name, int rank = 0)
    {
        bool half = t.Buffer is not null && t.DType is (DType.F16 or DType.BF16);
        Of(backend, t, name, half ? t.DType : DType.F32, rank);
    }

    public static void SameShape(in Tensor a, string aName, in Tensor b, string bName)
    {
        if (!a.Shape.SequenceEqual(b.Shape))
            throw new ArgumentException($"{bName} {b} must have the same shape as {aName} {a}", bName);
    }

    public static void LastDim(in Tensor vector, string name, in Tensor x)
    {
        if (vector.Dim(0) != x.Dim(-1))
            throw new ArgumentException($"{name} {vector} must match the last axis of x {x}", name);
    }

    /// <summary>RoPE's arguments, forward or backward: <paramref name="x"/> f32 [T, H, D] with D even (named
    /// <paramref name="name"/> in errors), positions i32 [T], cos and sin f32 [P, D/2].</summary>
    public static void Rope(ComputeBackend backend, Tensor x, string name, Tensor positions, Tensor cos, Tensor sin)
    {
        F32(backend, x, name, 3); Of(backend, positions, nameof(positions), DType.I32, 1);
        F32(backend, cos, nameof(cos), 2); F32(backend, sin, nameof(sin), 2);
        int d = x.Dim(2);
        if (d % 2 != 0) throw new ArgumentException($"RoPE needs an even head dimension; {name} is {x}", name);
        if (positions.Dim(0) != x.Dim(0))
            throw new ArgumentException($"positions {positions} must have one entry per token of {name} {x}", nameof(positions));
        if (cos.Dim(1) != d / 2 || !cos.Shape.SequenceEqual(sin.Shape))
            throw new ArgumentException($"cos and sin must both be [P, {d / 2}] for {name} {x}; got cos {cos}, sin {sin}", nameof(cos));
    }

    public static void Eps(float eps)
    {
        if (!(eps >= 0) || !float.IsFinite(eps)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "eps must be finite and >= 0");
    }

    /// <summary>Throws when two views of the same buffer share any element.</summary>
    public static void NoOverlap(in Tensor output, string outName, in Tensor input, string inName)
    {
        if (!ReferenceEquals(output.Buffer, input.Buffer)) return;
        long a0 = output.Offset, a1 = output.Offset + output.ElementCount;
        long b0 = input.Offset, b1 = input.Offset + input.ElementCount;
        if (a0 < b1 && b0 < a1 && output.ElementCount > 0 && input.ElementCount > 0)
            throw new ArgumentException($"{outName} {output} overlaps {inName} {input} in the same buffer", outName);
    }
}
