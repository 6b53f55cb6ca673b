namespace Rellax.Kernels.Cpu;

/// <summary>
/// The SIMD C# backend: <c>Vector512</c> kernels (with a <c>Vector256</c> fallback), parallel over
/// <see cref="Threads"/> worker threads. Work runs synchronously on the calling thread's pool.
/// </summary>
public sealed class CpuBackend : ComputeBackend
{
    private readonly CpuPrimitiveKernels _primitives;
    private readonly CpuCflora _cflora;
    private readonly CpuSubr _subr;
    private readonly CpuAttention _attention;

    /// <summary>Creates a CPU backend that uses up to <paramref name="threads"/> threads (0: one per core).</summary>
    public CpuBackend(int threads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        Threads = threads == 0 ? Environment.ProcessorCount : threads;
        ParallelOptions = new ParallelOptions { MaxDegreeOfParallelism = Threads };
        _primitives = new CpuPrimitiveKernels(this);
        _cflora = new CpuCflora(this);
        _subr = new CpuSubr(this);
        _attention = new CpuAttention(this);
    }

    /// <summary>Number of worker threads kernels split their work over.</summary>
    public int Threads { get; }

    internal ParallelOptions ParallelOptions { get; }

    /// <inheritdoc/>
    public override string Name => "cpu";

    internal override IPrimitiveKernels PrimitiveKernels => _primitives;

    internal override ICfloraKernels CfloraKernels => _cflora;

    internal override ISubrKernels SubrKernels => _subr;

    internal override IAttentionKernels AttentionKernels => _attention;

    /// <inheritdoc/>
    public override DeviceBuffer Allocate(DType dtype, long length) => new CpuBuffer(this, dtype, length);

    /// <inheritdoc/>
    public override void Synchronize() { }

    /// <summary>Raw pointer to the first element of a CPU tensor. Valid while its buffer lives.</summary>
    internal static unsafe T* Ptr<T>(in Tensor t) where T : unmanaged =>
        (T*)(((CpuBuffer)t.Buffer).Pointer + t.Offset * t.DType.SizeInBytes());

    /// <summary>The tensor's elements as a span (CPU tensors only).</summary>
    internal static unsafe Span<T> Span<T>(in Tensor t) where T : unmanaged =>
        new(Ptr<T>(t), checked((int)t.ElementCount));
}
