namespace Rellax.Kernels;

/// <summary>
/// A flat run of elements owned by one <see cref="ComputeBackend"/> (host memory for the CPU backend,
/// device memory for the GPU backends). Disposing frees the memory; <see cref="Tensor"/> values are views into it.
/// </summary>
public abstract class DeviceBuffer : IDisposable
{
    /// <summary>Creates the bookkeeping part of a buffer.</summary>
    protected DeviceBuffer(ComputeBackend backend, DType dtype, long length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Backend = backend;
        DType = dtype;
        Length = length;
    }

    /// <summary>The backend that owns the memory; only its kernels may read or write it.</summary>
    public ComputeBackend Backend { get; }

    /// <summary>Element type.</summary>
    public DType DType { get; }

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    /// <summary>Size in bytes.</summary>
    public long SizeInBytes => Length * DType.SizeInBytes();

    /// <summary>True once disposed.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Copies <paramref name="source"/> into elements [<paramref name="offset"/>, offset + source.Length).</summary>
    /// <typeparam name="T">CLR element type; must match <see cref="DType"/>.</typeparam>
    public void CopyFrom<T>(ReadOnlySpan<T> source, long offset = 0) where T : unmanaged
    {
        CheckAccess<T>(offset, source.Length, nameof(source));
        CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(source), offset * DType.SizeInBytes());
    }

    /// <summary>Copies elements [<paramref name="offset"/>, offset + destination.Length) into <paramref name="destination"/>.</summary>
    /// <typeparam name="T">CLR element type; must match <see cref="DType"/>.</typeparam>
    public void CopyTo<T>(Span<T> destination, long offset = 0) where T : unmanaged
    {
        CheckAccess<T>(offset, destination.Length, nameof(destination));
        Backend.Synchronize();
        CopyToHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(destination), offset * DType.SizeInBytes());
    }

    private void CheckAccess<T>(long offset, int count, string argument) where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (DTypeInfo.Of<T>() != DType)
            throw new ArgumentException($"buffer holds {DType} but the span is of {typeof(T).Name}", argument);
        if (offset < 0 || offset + count > Length)
            throw new ArgumentOutOfRangeException(argument, $"elements [{offset}, {offset + count}) are outside a buffer of {Length}");
    }

    /// <summary>Backend-specific byte copy from host memory.</summary>
    protected abstract void CopyFromHost(ReadOnlySpan<byte> source, long byteOffset);

    /// <summary>Backend-specific byte copy to host memory (after the backend has synchronized).</summary>
    protected abstract void CopyToHost(Span<byte> destination, long byteOffset);

    /// <summary>Frees the memory.</summary>
    protected abstract void Free();

    /// <inheritdoc/>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        Free();
        GC.SuppressFinalize(this);
    }
}
