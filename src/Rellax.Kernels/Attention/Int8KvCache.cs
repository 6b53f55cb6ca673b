namespace Rellax.Kernels;

/// <summary>
/// An int8 key/value cache for <see cref="Batch"/> left-padded sequences, filled by
/// <see cref="FlashAttention.Append"/> and read by <see cref="FlashAttention.Decode"/>. All sequences share the
/// filled length <see cref="Count"/> (left padding keeps them aligned at the right end); sequence b's real tokens are
/// positions <c>[PaddingOf(b), Count)</c>.
/// </summary>
/// <remarks>
/// Storage (all on the backend, row-major): keys and values int8 [B, Hkv, Capacity, D]; per token and head an fp32
/// key scale, an int32 key sum (Σ_c of the int8 key, for unsigned × signed dot products) and an fp32 value scale,
/// each [B, Hkv, Capacity]; the fp32 key-smoothing mean [B, Hkv, D], fixed by the first append (any constant is exact
/// under softmax; the first chunk's mean keeps later keys' int8 range small). Padding positions hold zeros.
/// About <c>2·D + 12</c> bytes per token and KV head, against <c>8·D</c> for an f32 cache. Dispose to free it.
/// </remarks>
public sealed class Int8KvCache : IDisposable
{
    private readonly DeviceBuffer[] _buffers;
    private int[] _padding;

    internal Int8KvCache(ComputeBackend backend, int batch, int kvHeads, int headDim, int capacity)
    {
        Backend = backend;
        Batch = batch; KvHeads = kvHeads; HeadDim = headDim; Capacity = capacity;
        long rows = checked((long)batch * kvHeads * capacity);
        _buffers = new DeviceBuffer[7];
        try
        {
            _buffers[0] = Keys = backend.Allocate(DType.I8, checked(rows * headDim));
            _buffers[1] = Values = backend.Allocate(DType.I8, checked(rows * headDim));
            _buffers[2] = KeyScales = backend.Allocate(DType.F32, rows);
            _buffers[3] = KeySums = backend.Allocate(DType.I32, rows);
            _buffers[4] = ValueScales = backend.Allocate(DType.F32, rows);
            _buffers[5] = KeyMean = backend.Allocate(DType.F32, (long)batch * kvHeads * headDim);
            _buffers[6] = Padding = backend.Allocate(DType.I32, batch);
        }
        catch
        {
            foreach (var b in _buffers) b?.Dispose();
            throw;
        }
        _padding = new int[batch];
    }

    /// <summary>The backend whose memory holds the cache.</summary>
    public ComputeBackend Backend { get; }

    /// <summary>Sequences.</summary>
    public int Batch { get; }

    /// <summary>Key/value heads.</summary>
    public int KvHeads { get; }

    /// <summary>Channels per head (D).</summary>
    public int HeadDim { get; }

    /// <summary>Positions per sequence.</summary>
    public int Capacity { get; }

    /// <summary>Positions filled so far (padding included), the same for every sequence.</summary>
    public int Count { get; private set; }

    /// <summary>Bytes of backend memory the cache holds: <c>B·Hkv·(Capacity·(2·D + 12) + 4·D) + 4·B</c>.</summary>
    public long SizeInBytes => _buffers.Sum(b => b.SizeInBytes);

    /// <summary>Whether <see cref="Dispose"/> has run.</summary>
    public bool IsDisposed { get; private set; }

    /// <summary>Left-padding positions of sequence <paramref name="sequence"/> (fixed by the first append).</summary>
    public int PaddingOf(int sequence) => _padding[sequence];

    /// <summary>Forgets every position (the memory is kept); the next append fixes padding and smoothing again.</summary>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        Count = 0;
    }

    /// <summary>Int8 keys [B, Hkv, Capacity, D].</summary>
    internal DeviceBuffer Keys { get; }

    /// <summary>Int8 values [B, Hkv, Capacity, D].</summary>
    internal DeviceBuffer Values { get; }

    /// <summary>f32 [B, Hkv, Capacity]: key (b, h, j) ≈ (Keys[b, h, j, :] · KeyScales[b, h, j]) + KeyMean[b, h, :].</summary>
    internal DeviceBuffer KeyScales { get; }

    /// <summary>i32 [B, Hkv, Capacity]: Σ_c Keys[b, h, j, c].</summary>
    internal DeviceBuffer KeySums { get; }

    /// <summary>f32 [B, Hkv, Capacity]: value (b, h, j) ≈ Values[b, h, j, :] · ValueScales[b, h, j].</summary>
    internal DeviceBuffer ValueScales { get; }

    /// <summary>f32 [B, Hkv, D]: the key-smoothing mean, written by the first append.</summary>
    internal DeviceBuffer KeyMean { get; }

    /// <summary>i32 [B]: left padding of each sequence (a device copy of <see cref="PaddingArray"/>).</summary>
    internal DeviceBuffer Padding { get; }

    /// <summary>Host copy of the padding.</summary>
    internal int[] PaddingArray => _padding;

    /// <summary>Called by the front before the kernel: on the first append, records and uploads the padding.</summary>
    internal void BeginAppend(int[] padding)
    {
        if (Count != 0) return;
        _padding = padding;
        Padding.CopyFrom<int>(padding);
    }

    /// <summary>Called by the front after the kernel has been queued.</summary>
    internal void EndAppend(int tokens) => Count += tokens;

    /// <summary>Frees the cache's memory.</summary>
    public void Dispose()
    {
        if (IsDisposed) return;
        IsDisposed = true;
        foreach (var b in _buffers) b.Dispose();
    }
}
