namespace Rellax.Kernels;

/// <summary>
/// A linear layer's weight quantized to int8, symmetric per output channel (LLM.int8()'s weight format): for row j of
/// the [N, K] weight, <c>scale_j = max_k |w[j, k]| / 127</c> and <c>q[j, k] = round(w[j, k] / scale_j)</c> in [-127, 127]
/// (round to nearest even; a zero row has scale 0). One f32 scale per row, one byte per element: a quarter of f32.
/// Made by <see cref="Primitives.QuantizeInt8(Tensor)"/>, used by <see cref="Primitives.LinearInt8"/>.
/// The bytes live on the backend in the backend's own layout (the CPU keeps them packed as u8 = q + 128 for its int8 GEMM);
/// <see cref="ReadValues"/> returns them row-major. Owns its buffers: dispose it.
/// </summary>
public sealed class Int8Weights : IDisposable
{
    internal Int8Weights(ComputeBackend backend, int rows, int cols, int groupSize, DeviceBuffer values, DeviceBuffer scales, DeviceBuffer? rowSums)
    {
        Backend = backend; Rows = rows; Cols = cols; GroupSize = groupSize; Values = values; Scales = scales; _rowSums = rowSums;
    }

    private readonly DeviceBuffer? _rowSums;

    /// <summary>The backend the buffers live on.</summary>
    public ComputeBackend Backend { get; }

    /// <summary>N: output features (rows of the HF weight).</summary>
    public int Rows { get; }

    /// <summary>K: input features (columns of the HF weight).</summary>
    public int Cols { get; }

    /// <summary>
    /// G: input columns per activation scale group (<see cref="Primitives.LinearInt8"/> quantizes each row of x with one scale
    /// per G consecutive columns; <see cref="Primitives.DefaultInt8GroupSize"/>). The weights themselves keep one scale per row.
    /// </summary>
    public int GroupSize { get; }

    /// <summary>The int8 values in the backend's layout (CPU: see <c>CpuInt8Linear</c>).</summary>
    internal DeviceBuffer Values { get; }

    /// <summary>f32 [N]: the dequantization scale of each row.</summary>
    internal DeviceBuffer Scales { get; }

    /// <summary>
    /// ILGPU (and CUDA, which quantizes with it): i32 [N] whole-row sums Σ_k q[j, k], unused by their s8 × s8 dots. The CPU
    /// keeps none (its weights are u8 = q + 128 and the correction comes from the activations): reading it there throws.
    /// </summary>
    internal DeviceBuffer RowSums => _rowSums ?? throw new InvalidOperationException($"{this} on {Backend.Name} keeps no row sums");

    /// <summary>Bytes held on the backend (values with the layout's padding, scales, and row sums where the backend keeps them).</summary>
    public long SizeInBytes => Values.SizeInBytes + Scales.SizeInBytes + (_rowSums?.SizeInBytes ?? 0);

    /// <summary>Whether <see cref="Dispose"/> has run.</summary>
    public bool IsDisposed => Values.IsDisposed;

    /// <summary>The per-row scales, f32 [N] (units of the original weight per integer step).</summary>
    public float[] ReadScales()
    {
        var s = new float[Rows];
        Scales.CopyTo<float>(s);
        return s;
    }

    /// <summary>The quantized values row-major, [N·K] (element (j, k) at j·K + k).</summary>
    public sbyte[] ReadValues()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        return Backend.Int8LinearKernels.ReadValues(this);
    }

    /// <inheritdoc/>
    public override string ToString() => $"int8[{Rows}, {Cols}]";

    /// <summary>Frees the buffers. Idempotent.</summary>
    public void Dispose()
    {
        Values.Dispose(); Scales.Dispose(); _rowSums?.Dispose();
    }
}
