namespace Rellax.Kernels;

/// <summary>How large the shapes of <see cref="KernelSelftest"/> are: small runs in seconds on the ILGPU CPU emulator
/// (CI), medium exercises the blocked paths, large the GPU benchmark shapes.</summary>
public enum SelftestSize
{
    /// <summary>Odd shapes of tens of rows: seconds on the CPU and the emulator.</summary>
    Small,
    /// <summary>Odd shapes of hundreds of rows: the blocked and multi-tile paths of every kernel.</summary>
    Medium,
    /// <summary>Odd shapes of about a thousand rows; the benchmark runs the GPU shapes.</summary>
    Large,
}

/// <summary>The outcome of one op on one backend.</summary>
public enum SelftestStatus
{
    /// <summary>Within tolerance of the double reference.</summary>
    Pass,
    /// <summary>Outside tolerance, non-finite where the reference is finite, or the op threw.</summary>
    Fail,
    /// <summary>The backend does not implement the op (it threw <see cref="NotSupportedException"/>): not a failure.</summary>
    NotImplemented,
}

/// <summary>
/// One row of the self-test table: an op on one backend compared with the double-precision reference (and with the CPU
/// backend's output).
/// </summary>
/// <param name="Op">Op family and variant, e.g. <c>linear.f16</c> or <c>attention.int8.decode</c>.</param>
/// <param name="Shape">The problem's shape in words, e.g. <c>M=33 K=67 N=45</c>.</param>
/// <param name="Backend">The backend's <see cref="ComputeBackend.Name"/>.</param>
/// <param name="Status">Pass, fail or not implemented.</param>
/// <param name="MaxAbsError">max |out − ref| over all output elements (NaN when not run).</param>
/// <param name="MaxRelError">Normwise: max |out − ref| / max |ref| (NaN when not run).</param>
/// <param name="Tolerance">The pass criterion in words, e.g. <c>|err| ≤ 1e-5 + 1e-4·|ref|</c>.</param>
/// <param name="MaxAbsVsCpu">max |out − cpu out| (0 for the CPU itself; NaN when not run or the CPU lacks the op).</param>
/// <param name="Milliseconds">Wall time of one call of the op on the backend, synchronized before and after: the first call
/// (so it includes any lazy kernel compilation), except on the CPU, whose first call gives the comparison output and whose
/// second is timed; NaN when not run.</param>
/// <param name="Note">Why it failed or was not run, or an extra measure (e.g. the int8 cosine against exact attention).</param>
public sealed record SelftestCheck(string Op, string Shape, string Backend, SelftestStatus Status, double MaxAbsError,
    double MaxRelError, string Tolerance, double MaxAbsVsCpu, double Milliseconds, string Note);

/// <summary>One benchmark row: an op at one of the benchmark shapes, timed on one backend.</summary>
/// <param name="Op">Op, e.g. <c>cflora.f16</c>, <c>subr.i8</c>, <c>attention.int8</c>.</param>
/// <param name="Shape">The shape in words.</param>
/// <param name="Backend">The backend's name.</param>
/// <param name="Milliseconds">Median wall time of the timed repetitions (after one warm-up call), synchronized.</param>
/// <param name="Flops">Useful floating-point (or integer multiply-add) operations of one call, counted from the shape.</param>
/// <param name="Bytes">Bytes one call must move from memory at least (gathered rows, weights, inputs and outputs).</param>
/// <param name="Metric">Which of the two the row is judged by: <c>TFLOP/s</c> or <c>GB/s</c>.</param>
/// <param name="Achieved">The achieved rate in that metric.</param>
/// <param name="PeakFraction">Achieved / the device's peak in that metric (NaN when the peak is unknown).</param>
/// <param name="Note">E.g. the base GEMM's time and the adapter's overhead.</param>
public sealed record SelftestBenchResult(string Op, string Shape, string Backend, double Milliseconds, double Flops, double Bytes,
    string Metric, double Achieved, double PeakFraction, string Note);

/// <summary>The peak rates a benchmark row is compared with, and where they come from.</summary>
/// <param name="Fp32TflopsPerSecond">Peak fp32 FMA throughput (CUDA cores / SIMD units), TFLOP/s.</param>
/// <param name="TensorTflopsPerSecond">Peak dense fp16 tensor-core throughput, TFLOP/s (the CPU: same as fp32).</param>
/// <param name="GigabytesPerSecond">Peak (GPU: from the memory clock and bus width) or measured (CPU) memory bandwidth, GB/s.</param>
/// <param name="Source">How the numbers were obtained, in words.</param>
public sealed record SelftestPeak(double Fp32TflopsPerSecond, double TensorTflopsPerSecond, double GigabytesPerSecond, string Source);

/// <summary>The inputs and outputs of one benchmark shape, for an outside check (<c>rellax selftest --output</c>).</summary>
/// <param name="Name">File stem, e.g. <c>cuda-cflora-T1024</c>.</param>
/// <param name="Metadata">Op, shape parameters, backend and our timings, as strings.</param>
/// <param name="Tensors">Named host copies: float[], Half[], sbyte[] or int[] with their shapes.</param>
public sealed record SelftestCapture(string Name, IReadOnlyDictionary<string, string> Metadata,
    IReadOnlyList<(string Name, Array Data, int[] Shape)> Tensors);
