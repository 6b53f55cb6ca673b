using ILGPU;
using ILGPU.Runtime;

namespace Rellax.Kernels.Ilgpu;

/// <summary>
/// Accelerator memory of the <see cref="IlgpuBackend"/>: one ILGPU <c>MemoryBuffer1D&lt;T, Stride1D.Dense&gt;</c>
/// with T = float (f32), <see cref="System.Half"/> (f16), ushort (bf16 bits), sbyte (i8) or int (i32). Zeroed at allocation.
/// </summary>
public sealed class IlgpuBuffer : DeviceBuffer
{
    private readonly IlgpuBackend _backend;
    private readonly MemoryBuffer _memory;

    internal IlgpuBuffer(IlgpuBackend backend, DType dtype, long length) : base(backend, dtype, length)
    {
        _backend = backend;
        // ILGPU rejects empty allocations on some accelerators: keep at least one element; views use Length.
        long n = Math.Max(1, length);
        var accelerator = backend.Accelerator;
        _memory = dtype switch
        {
            DType.F32 => accelerator.Allocate1D<float>(n),
            DType.F16 => accelerator.Allocate1D<System.Half>(n),
            DType.BF16 => accelerator.Allocate1D<ushort>(n),
            DType.I8 => accelerator.Allocate1D<sbyte>(n),
            DType.I32 => accelerator.Allocate1D<int>(n),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
        };
        try
        {
            _memory.AsRawArrayView().MemSetToZero(backend.Stream);
        }
        catch
        {
            _memory.Dispose();
            throw;
        }
    }

    /// <summary>The whole buffer as a dense view of <typeparamref name="T"/> (which must be this buffer's storage type).</summary>
    internal ArrayView1D<T, Stride1D.Dense> View<T>() where T : unmanaged =>
        ((MemoryBuffer1D<T, Stride1D.Dense>)_memory).View.SubView(0, Length);

    /// <summary>The elements of <paramref name="tensor"/> (offset, element count) as a contiguous view.</summary>
    internal static ArrayView<T> ViewOf<T>(in Tensor tensor) where T : unmanaged =>
        ((IlgpuBuffer)tensor.Buffer).View<T>().SubView(tensor.Offset, tensor.ElementCount);

    /// <summary>The device address of a whole buffer (its element 0).</summary>
    internal static IntPtr DevicePointer(DeviceBuffer buffer) => ((IlgpuBuffer)buffer)._memory.NativePtr;

    /// <summary>Device address of <paramref name="tensor"/>'s first element (for launching hand-written CUDA kernels).</summary>
    internal static IntPtr DevicePointer(in Tensor tensor)
    {
        var buffer = (IlgpuBuffer)tensor.Buffer;
        return buffer._memory.NativePtr + (nint)(tensor.Offset * tensor.DType.SizeInBytes());
    }

    /// <inheritdoc/>
    protected override void CopyFromHost(ReadOnlySpan<byte> source, long byteOffset)
    {
        if (source.IsEmpty) return;
        // ILGPU's span overloads synchronize the stream: the copy is complete (and ordered after queued kernels) on return.
        _memory.AsRawArrayView(byteOffset, source.Length).CopyFromCPU(_backend.Stream, source);
    }

    /// <inheritdoc/>
    protected override void CopyToHost(Span<byte> destination, long byteOffset)
    {
        if (destination.IsEmpty) return;
        _memory.AsRawArrayView(byteOffset, destination.Length).CopyToCPU(_backend.Stream, destination);
    }

    /// <inheritdoc/>
    protected override void Free()
    {
        // After the backend is gone, the accelerator has already released this memory.
        if (!_backend.IsDisposed) _memory.Dispose();
    }
}
