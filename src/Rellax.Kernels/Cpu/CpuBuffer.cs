using System.Runtime.InteropServices;

namespace Rellax.Kernels.Cpu;

/// <summary>
/// 64-byte aligned native memory owned through a SafeHandle, so it is freed even if nobody disposes the buffer.
/// On Linux, buffers of <see cref="HugePageThreshold"/> bytes or more are 2 MiB aligned and advised
/// <c>MADV_HUGEPAGE</c> before they are first touched: with transparent huge pages in <c>madvise</c> mode (the Debian
/// default), a kernel that has huge pages to give backs them with 2 MiB pages, so random row gathers over a large
/// table (SUBR, embeddings) miss the TLB far less often. The advice is best effort: where it is refused or not
/// honoured (the development VM grants none; see benchmarks/results/subr-cpu.md), the buffer keeps 4 KiB pages.
/// </summary>
internal sealed unsafe partial class AlignedMemoryHandle : SafeHandle
{
    /// <summary>Smallest allocation that gets 2 MiB alignment and the huge-page advice.</summary>
    public const long HugePageThreshold = 4L << 20;

    private const nuint HugePage = 2u << 20;
    private const int MadvHugePage = 14;

    /// <summary>Allocates <paramref name="bytes"/> zeroed bytes; <paramref name="hugePages"/>: whether a large buffer asks
    /// for huge pages (<see cref="CpuBackendOptions.HugePages"/> of the backend that allocates it).</summary>
    public AlignedMemoryHandle(nuint bytes, bool hugePages = true) : base(IntPtr.Zero, ownsHandle: true)
    {
        bytes = Math.Max(bytes, 1);
        bool huge = hugePages && OperatingSystem.IsLinux() && (long)bytes >= HugePageThreshold;
        void* p = NativeMemory.AlignedAlloc(bytes, huge ? HugePage : 64);
        if (huge)
        {
            try
            {
                _ = Madvise(p, bytes, MadvHugePage);
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                // No libc madvise (not glibc/musl): keep normal pages.
            }
        }
        NativeMemory.Clear(p, bytes);
        SetHandle((IntPtr)p);
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMemory.AlignedFree((void*)handle);
        return true;
    }
}

/// <summary>
/// Host memory of the CPU backend: either 64-byte aligned memory it owns (zeroed at allocation), or a read-only view of
/// memory owned by someone else (a memory-mapped checkpoint; see <see cref="CpuBackend.WrapReadOnly"/>), which the
/// buffer keeps reachable through <see cref="Owner"/> and never frees.
/// </summary>
internal sealed unsafe class CpuBuffer : DeviceBuffer
{
    private readonly AlignedMemoryHandle? _memory;
    private readonly byte* _borrowed;
    private readonly System.Buffers.MemoryHandle _pin;
    private readonly bool _pinned;

    public CpuBuffer(CpuBackend backend, DType dtype, long length) : base(backend, dtype, length)
    {
        _memory = new AlignedMemoryHandle((nuint)(length * dtype.SizeInBytes()), backend.Options.HugePages);
    }

    /// <summary>A read-only view of <paramref name="length"/> elements at <paramref name="address"/>, owned by <paramref name="owner"/>.</summary>
    public CpuBuffer(CpuBackend backend, DType dtype, long length, byte* address, object owner) : base(backend, dtype, length)
    {
        _borrowed = address;
        Owner = owner;
    }

    /// <summary>A writable view of a pinned managed array (<see cref="CpuBackend.Wrap(float[])"/>); disposing it unpins
    /// the array.</summary>
    public CpuBuffer(CpuBackend backend, DType dtype, long length, System.Buffers.MemoryHandle pin, object owner) : base(backend, dtype, length)
    {
        _pin = pin;
        _pinned = true;
        _borrowed = (byte*)pin.Pointer;
        Owner = owner;
    }

    /// <summary>Start of the memory. Valid until the buffer is disposed (for a view: while its owner keeps the memory).</summary>
    public byte* Pointer => _memory is null ? _borrowed : (byte*)_memory.DangerousGetHandle();

    /// <summary>True for a view of memory the buffer does not own: kernels read it, <see cref="DeviceBuffer.CopyFrom{T}"/> refuses.</summary>
    public bool IsReadOnlyView => _memory is null && !_pinned;

    /// <summary>What keeps a view's memory alive (for example the memory-mapped file); null for owned memory.</summary>
    public object? Owner { get; }

    protected override void CopyFromHost(ReadOnlySpan<byte> source, long byteOffset)
    {
        if (IsReadOnlyView)
            throw new InvalidOperationException($"this {DType} buffer of {Length} elements is a read-only view of a memory-mapped file; it cannot be written");
        source.CopyTo(new Span<byte>(Pointer + byteOffset, source.Length));
    }

    protected override void CopyToHost(Span<byte> destination, long byteOffset) =>
        new ReadOnlySpan<byte>(Pointer + byteOffset, destination.Length).CopyTo(destination);

    protected override void Free()
    {
        _memory?.Dispose();
        if (_pinned) _pin.Dispose();
    }
}
