namespace Rellax.Kernels;

/// <summary>
/// A place where kernels run and memory lives: the SIMD CPU backend, ILGPU (CUDA, OpenCL or its CPU emulator),
/// or CUDA with the hand-written kernels. Each op family is reached through a checked front
/// (<see cref="Primitives"/>, ...) that validates arguments once, then calls this backend's kernels.
/// </summary>
public abstract class ComputeBackend : IDisposable
{
    private Primitives? _primitives;
    private CfloraLinear? _cflora;
    private SubrTopK? _subr;
    private FlashAttention? _attention;
    private BackwardOps? _backward;

    /// <summary>Short name for logs and <c>--json</c> output, e.g. <c>cpu</c> or <c>ilgpu:CPUAccelerator</c>.</summary>
    public abstract string Name { get; }

    /// <summary>The transformer primitives (GEMM, norms, RoPE, attention, ...) on this backend.</summary>
    public Primitives Primitives => _primitives ??= new Primitives(this);

    /// <summary>This backend's implementation of the primitive family (unchecked; reached through <see cref="Primitives"/>).</summary>
    internal abstract IPrimitiveKernels PrimitiveKernels { get; }

    /// <summary>The fused CFLoRA linear layer (LoRA, iLoRA, RecLoRA, CFLoRA) and its generator on this backend.</summary>
    public CfloraLinear Cflora => _cflora ??= new CfloraLinear(this);

    /// <summary>This backend's CFLoRA kernels (unchecked; reached through <see cref="Cflora"/>).</summary>
    internal virtual ICfloraKernels CfloraKernels => throw new NotSupportedException($"the {Name} backend has no CFLoRA kernels yet");

    /// <summary>SUBR retrieval: batched top-K of each sample's history against its target on this backend.</summary>
    public SubrTopK Subr => _subr ??= new SubrTopK(this);

    /// <summary>This backend's SUBR kernel (unchecked; reached through <see cref="Subr"/>).</summary>
    internal virtual ISubrKernels SubrKernels => throw new NotSupportedException($"the {Name} backend has no SUBR kernel yet");

    /// <summary>Batched flash-style attention (int8 or fp32 scores) and the int8 KV cache on this backend.</summary>
    public FlashAttention Attention => _attention ??= new FlashAttention(this);

    /// <summary>This backend's attention kernels (unchecked; reached through <see cref="Attention"/>).</summary>
    internal virtual IAttentionKernels AttentionKernels => throw new NotSupportedException($"the {Name} backend has no attention kernels yet");

    /// <summary>This backend's int8 linear kernels (unchecked; reached through <see cref="Primitives.QuantizeInt8(Tensor)"/> and the
    /// int8 <see cref="Primitives.LinearInt8"/>).</summary>
    internal virtual IInt8LinearKernels Int8LinearKernels => throw new NotSupportedException($"the {Name} backend has no int8 linear kernels yet (use the cpu backend, or f32/f16/bf16 weights)");

    /// <summary>The backward (gradient) ops that training runs on this backend.</summary>
    public BackwardOps Backward => _backward ??= new BackwardOps(this);

    /// <summary>This backend's backward kernels (unchecked; reached through <see cref="Backward"/>).</summary>
    internal virtual IBackwardKernels BackwardKernels => throw new NotSupportedException($"the {Name} backend has no backward kernels yet");

    /// <summary>Allocates <paramref name="length"/> zeroed elements of <paramref name="dtype"/>.</summary>
    public abstract DeviceBuffer Allocate(DType dtype, long length);

    /// <summary>Allocates a zeroed buffer that holds exactly one tensor of <paramref name="shape"/>.</summary>
    public DeviceBuffer Allocate(DType dtype, params ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (int d in shape) n *= d;
        return Allocate(dtype, n);
    }

    /// <summary>Allocates a buffer and copies <paramref name="data"/> into it.</summary>
    public DeviceBuffer Upload<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        var buffer = Allocate(DTypeInfo.Of<T>(), (long)data.Length);
        try
        {
            buffer.CopyFrom(data);
            return buffer;
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>Waits until all work queued on this backend has finished.</summary>
    public abstract void Synchronize();

    /// <summary>Releases the backend's native resources. Buffers it allocated must be disposed first.</summary>
    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>Extension helpers that read a whole buffer as a tensor.</summary>
public static class DeviceBufferExtensions
{
    /// <summary>The whole buffer viewed with <paramref name="shape"/> (element counts must agree).</summary>
    public static Tensor AsTensor(this DeviceBuffer buffer, params ReadOnlySpan<int> shape)
    {
        var t = new Tensor(buffer, 0, shape);
        if (t.ElementCount != buffer.Length)
            throw new ArgumentException($"shape {Tensor.Format(shape)} has {t.ElementCount} elements but the buffer has {buffer.Length}", nameof(shape));
        return t;
    }

    /// <summary>Copies the tensor's elements to a new host array.</summary>
    public static T[] ToArray<T>(this Tensor tensor) where T : unmanaged
    {
        var result = new T[tensor.ElementCount];
        tensor.Buffer.CopyTo<T>(result, tensor.Offset);
        return result;
    }
}
