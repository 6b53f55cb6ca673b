using System.Runtime.InteropServices;

namespace Rellax.Kernels.Cpu;

/// <summary>64-byte aligned native memory owned through a SafeHandle, so it is freed even if nobody disposes the buffer.</summary>
internal sealed unsafe class AlignedMemoryHandle : SafeHandle
{
    public AlignedMemoryHandle(nuint bytes) : base(IntPtr.Zero, ownsHandle: true)
    {
        void* p = NativeMemory.AlignedAlloc(Math.Max(bytes, 1), 64);
        NativeMemory.Clear(p, Math.Max(bytes, 1));
        SetHandle((IntPtr)p);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}

/// <summary>Host memory of the CPU backend: 64-byte aligned, zeroed at allocation.</summary>
internal sealed unsafe class CpuBuffer : DeviceBuffer
{
    private readonly AlignedMemoryHandle _memory;

    public CpuBuffer(CpuBackend backend, DType dtype, long length) : base(backend, dtype, length)
    {
        _memory = new AlignedMemoryHandle((nuint)(length * dtype.SizeInBytes()));
    }

    /// <summary>Start of the memory. Valid until the buffer is disposed.</summary>
    public byte* Pointer => (byte*)_memory.DangerousGetHandle();

    protected override void CopyFromHost(ReadOnlySpan<byte> source, long byteOffset) =>
        source.CopyTo(new Span<byte>(Pointer + byteOffset, source.Length));

    protected override void CopyToHost(Span<byte> destination, long byteOffset) =>
        new ReadOnlySpan<byte>(Pointer + byteOffset, destination.Length).CopyTo(destination);

    protected override void Free() => _memory.Dispose();
}
