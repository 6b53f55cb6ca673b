using Rellax.Kernels;

namespace Rellax.Runtime;

/// <summary>How a model's matrices (embedding, lm_head, the linear layers) are held after loading (<c>--weights</c>).</summary>
public enum WeightFormat
{
    /// <summary>As stored in the checkpoint (F32, F16 or BF16; zero copy on the CPU backend where aligned).</summary>
    Auto,
    /// <summary>Converted to f32 at load.</summary>
    F32,
    /// <summary>Converted to bf16 at load (widened on the fly by the kernels).</summary>
    BF16,
    /// <summary>Converted to f16 at load (widened on the fly by the kernels).</summary>
    F16,
    /// <summary>
    /// Quantized at load to int8, symmetric per output row (<see cref="Primitives.QuantizeInt8(Tensor)"/>): every linear layer, lm_head
    /// and the embedding. Linear layers run LLM.int8()-style (<see cref="Primitives.LinearInt8"/>); adapters stay fp32.
    /// CPU backend only.
    /// </summary>
    Int8,
}

/// <summary>Options for <see cref="LlamaModel.Load(string, ComputeBackend, ModelLoadOptions?, IProgress{WorkProgress}?, CancellationToken)"/>.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>How the matrices are held (default: as stored).</summary>
    public WeightFormat Weights { get; init; } = WeightFormat.Auto;

    /// <summary>LLM.int8() outlier threshold for <see cref="WeightFormat.Int8"/>: input columns with some |x| above it run in
    /// fp32. Finite and &gt; 0; default <see cref="Primitives.DefaultOutlierThreshold"/> (6, as bitsandbytes).</summary>
    public float OutlierThreshold { get; init; } = Primitives.DefaultOutlierThreshold;

    /// <summary>
    /// Diagnostics (benchmarks and tests; not exposed on the CLI): with <see cref="WeightFormat.Int8"/>, for each matrix name
    /// the outlier threshold to quantize it with, or null to keep that matrix as stored. Null (the default): every matrix at
    /// <see cref="OutlierThreshold"/>. A tiny threshold sends every input column through the fp32 path, which leaves only the
    /// weight quantization (W8A32); that is how <c>--int8-diagnose</c> separates weight from activation error.
    /// </summary>
    internal Func<string, float?>? Int8Plan { get; init; }

    /// <summary>Diagnostics (benchmarks and tests): the int8 activation group size (<see cref="Int8Weights.GroupSize"/>; default
    /// <see cref="Primitives.DefaultInt8GroupSize"/>).</summary>
    internal int Int8GroupSize { get; init; } = Primitives.DefaultInt8GroupSize;

    /// <summary>The command-line spellings of <see cref="WeightFormat"/>, in the order shown to users.</summary>
    public static IReadOnlyList<string> WeightNames { get; } = ["auto", "f32", "bf16", "f16", "int8"];

    /// <summary>Parses a <c>--weights</c> value (case-insensitive).</summary>
    /// <exception cref="ArgumentException">Not one of <see cref="WeightNames"/>; the message lists them.</exception>
    public static WeightFormat ParseWeights(string value) => value?.ToLowerInvariant() switch
    {
        "auto" => WeightFormat.Auto,
        "f32" => WeightFormat.F32,
        "bf16" => WeightFormat.BF16,
        "f16" => WeightFormat.F16,
        "int8" => WeightFormat.Int8,
        _ => throw new ArgumentException($"--weights must be one of {string.Join(", ", WeightNames)}; got '{value}'", nameof(value)),
    };

    /// <summary>The command-line spelling of <paramref name="format"/>.</summary>
    public static string Name(WeightFormat format) => format.ToString().ToLowerInvariant();
}

/// <summary>
/// One weight matrix [rows, cols] of a loaded model, dense (f32, f16 or bf16 buffer) or int8 (<see cref="Int8Weights"/>),
/// with the two ways the forward uses a matrix: as a linear layer and as a row table (embedding, lm_head rows).
/// </summary>
internal sealed class LinearWeight
{
    private readonly float _outlierThreshold;

    private LinearWeight(int rows, int cols, DeviceBuffer? dense, Int8Weights? int8, float outlierThreshold)
    {
        Rows = rows; Cols = cols; Dense = dense; Int8 = int8; _outlierThreshold = outlierThreshold;
    }

    public static LinearWeight Of(DeviceBuffer dense, int rows, int cols) => new(rows, cols, dense, null, Primitives.DefaultOutlierThreshold);

    /// <summary>An int8 matrix whose linear layer keeps input columns above <paramref name="outlierThreshold"/> in fp32.</summary>
    public static LinearWeight Of(Int8Weights int8, float outlierThreshold) => new(int8.Rows, int8.Cols, null, int8, outlierThreshold);

    public int Rows { get; }

    public int Cols { get; }

    public DeviceBuffer? Dense { get; }

    public Int8Weights? Int8 { get; }

    /// <summary>The element type: the dense buffer's, or <see cref="DType.I8"/>.</summary>
    public DType DType => Dense?.DType ?? DType.I8;

    /// <summary>The dense matrix as a tensor [rows, cols]; for int8 weights, an error naming the caller's need.</summary>
    public Tensor Tensor => Dense?.AsTensor(Rows, Cols) ?? throw new NotSupportedException("this operation needs dense (f32/f16/bf16) weights, not int8");

    /// <summary>This frozen weight's term of <see cref="BackwardOps.LinearInput"/> (dense, or int8 read dequantized).</summary>
    /// <param name="dy">Gradient of the loss with respect to the layer's output, f32 [T, rows].</param>
    public FrozenLinearTerm Frozen(Tensor dy) => Int8 is { } q ? new FrozenLinearTerm(dy, q) : new FrozenLinearTerm(dy, Tensor);

    /// <summary>An adapted module's <see cref="CfloraBackwardModule"/> with this weight as its frozen W0 (dense, or
    /// <see cref="CfloraBackwardModule.W0Int8"/>).</summary>
    internal CfloraBackwardModule AdaptedBackward(Tensor a, Tensor b, Tensor? g, float scale, Tensor dy, Tensor? da, Tensor? db, Tensor? dg) =>
        Int8 is { } q
            ? new CfloraBackwardModule(default, a, b, g, scale, dy, da, db, dg) { W0Int8 = q }
            : new CfloraBackwardModule(Tensor, a, b, g, scale, dy, da, db, dg);

    /// <summary>y = x Wᵀ (+ bias), through <see cref="Primitives.Linear"/> or <see cref="Primitives.LinearInt8"/>.</summary>
    public void Apply(Primitives ops, Tensor x, Tensor? bias, Tensor y)
    {
        if (Int8 is { } q) ops.LinearInt8(x, q, bias, y, _outlierThreshold);
        else ops.Linear(x, Tensor, bias, y);
    }

    /// <summary>y[t] = W[ids[t]] (widened or dequantized to f32).</summary>
    public void Gather(Primitives ops, Tensor ids, Tensor y)
    {
        if (Int8 is { } q) ops.EmbeddingInt8(ids, q, y);
        else ops.Embedding(ids, Tensor, y);
    }
}
