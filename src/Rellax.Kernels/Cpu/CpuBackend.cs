using System.Runtime.Intrinsics;

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
    private readonly CpuBackwardKernels _backward;
    private readonly CpuInt8Linear _int8;

    /// <summary>Creates a CPU backend with default options that uses up to <paramref name="threads"/> threads (0: one per core).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="threads"/> is negative.</exception>
    public CpuBackend(int threads = 0) : this(new CpuBackendOptions { Threads = ValidThreads(threads) })
    {
    }

    /// <summary>Creates a CPU backend with <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentException">An option is out of range (e.g. negative <see cref="CpuBackendOptions.Threads"/>); the message names it.</exception>
    public CpuBackend(CpuBackendOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(nameof(options));
        Threads = options.Threads == 0 ? Environment.ProcessorCount : options.Threads;
        InstructionSet = CpuBackendOptions.Clamp(options.InstructionSet);
        Options = options with { Threads = Threads, InstructionSet = InstructionSet };
        Blocking = options.Blocking ?? GemmBlocking.For(CpuInfo.Current, Vector512.IsHardwareAccelerated);
        AttentionDots = InstructionSet switch
        {
            CpuInstructionSet.AvxVnni => CpuAttention.DotStrategy.AvxVnni,
            CpuInstructionSet.Avx512 => CpuAttention.DotStrategy.Avx512BW,
            _ => CpuAttention.DotStrategy.Scalar,
        };
        Int8Dots = InstructionSet switch
        {
            CpuInstructionSet.AvxVnni => CpuInt8Linear.DotStrategy.AvxVnni,
            CpuInstructionSet.Avx512 => CpuInt8Linear.DotStrategy.Avx512BW,
            _ => CpuInt8Linear.DotStrategy.Scalar,
        };
        ParallelOptions = new ParallelOptions { MaxDegreeOfParallelism = Threads };
        _primitives = new CpuPrimitiveKernels(this);
        _cflora = new CpuCflora(this);
        _subr = new CpuSubr(this);
        _attention = new CpuAttention(this);
        _backward = new CpuBackwardKernels(this);
        _int8 = new CpuInt8Linear(this);
    }

    private static int ValidThreads(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        return threads;
    }

    /// <summary>
    /// The effective options: as given, with <see cref="CpuBackendOptions.Threads"/> resolved to the thread count and
    /// <see cref="CpuBackendOptions.InstructionSet"/> clamped to this CPU.
    /// </summary>
    public CpuBackendOptions Options { get; }

    /// <summary>Number of worker threads kernels split their work over.</summary>
    public int Threads { get; }

    /// <summary>The integer dot-product instruction set the int8 kernels use: the requested cap clamped to this CPU.</summary>
    public CpuInstructionSet InstructionSet { get; }

    /// <summary>fp32 GEMM MC/NC blocking of this backend.</summary>
    internal GemmBlocking Blocking { get; }

    /// <summary>The int8 attention dot strategy <see cref="InstructionSet"/> maps to.</summary>
    internal CpuAttention.DotStrategy AttentionDots { get; }

    /// <summary>The int8 linear layer's dot strategy <see cref="InstructionSet"/> maps to.</summary>
    internal CpuInt8Linear.DotStrategy Int8Dots { get; }

    internal ParallelOptions ParallelOptions { get; }

    /// <inheritdoc/>
    public override string Name => "cpu";

    internal override IPrimitiveKernels PrimitiveKernels => _primitives;

    internal override ICfloraKernels CfloraKernels => _cflora;

    internal override ISubrKernels SubrKernels => _subr;

    internal override IAttentionKernels AttentionKernels => _attention;

    internal override IBackwardKernels BackwardKernels => _backward;

    internal override IInt8LinearKernels Int8LinearKernels => _int8;

    /// <summary>Which int8 GEMM paths this CPU has (AVX-VNNI, AVX-512BW, scalar) and which one the int8 linear layer takes with default options.</summary>
    public static string Int8Paths => CpuInt8Linear.Describe();

    /// <inheritdoc/>
    public override DeviceBuffer Allocate(DType dtype, long length) => new CpuBuffer(this, dtype, length);

    /// <summary>
    /// A read-only buffer over <paramref name="length"/> elements of host memory at <paramref name="address"/> that this
    /// backend's kernels read in place (no copy): how a memory-mapped checkpoint's weights become tensors. Returns null
    /// when <paramref name="address"/> is not aligned to the element size (the kernels load elements through typed
    /// pointers; they need no more than that, vector loads being unaligned), so the caller copies instead.
    /// </summary>
    /// <param name="dtype">Element type of the memory.</param>
    /// <param name="length">Number of elements.</param>
    /// <param name="address">First byte; must stay valid and unchanged while the buffer is in use.</param>
    /// <param name="owner">The object that keeps the memory mapped (held by the buffer, never disposed by it): dispose it
    /// only after every buffer over it.</param>
    /// <returns>The view, or null when the address is misaligned. Writing to it (<see cref="DeviceBuffer.CopyFrom{T}"/>)
    /// throws <see cref="InvalidOperationException"/>; disposing it frees nothing.</returns>
    public unsafe DeviceBuffer? WrapReadOnly(DType dtype, long length, nint address, object owner)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentNullException.ThrowIfNull(owner);
        if (address == 0) throw new ArgumentException("address must not be null", nameof(address));
        if (address % dtype.SizeInBytes() != 0) return null;
        return new CpuBuffer(this, dtype, length, (byte*)address, owner);
    }

    /// <summary>
    /// A writable buffer over a managed array that this backend's kernels read and write in place (no copy): how host
    /// code that keeps its data in arrays (a trainer's parameters, gradients and activations) runs the ops on it. The
    /// array is pinned until the buffer is disposed; allocate it with <c>GC.AllocateArray(length, pinned: true)</c> to
    /// make the pin free.
    /// </summary>
    /// <param name="array">The elements; the buffer has <c>array.Length</c> of them.</param>
    public DeviceBuffer Wrap(float[] array) => WrapArray(array, DType.F32);

    /// <inheritdoc cref="Wrap(float[])"/>
    public DeviceBuffer Wrap(int[] array) => WrapArray(array, DType.I32);

    private CpuBuffer WrapArray<T>(T[] array, DType dtype) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(array);
        return new CpuBuffer(this, dtype, array.Length, array.AsMemory().Pin(), array);
    }

    /// <inheritdoc/>
    public override void Synchronize() { }

    /// <summary>Raw pointer to the first element of a CPU tensor. Valid while its buffer lives.</summary>
    internal static unsafe T* Ptr<T>(in Tensor t) where T : unmanaged =>
        (T*)(((CpuBuffer)t.Buffer).Pointer + t.Offset * t.DType.SizeInBytes());

    /// <summary>The tensor's elements as a span (CPU tensors only).</summary>
    internal static unsafe Span<T> Span<T>(in Tensor t) where T : unmanaged =>
        new(Ptr<T>(t), checked((int)t.ElementCount));
}
