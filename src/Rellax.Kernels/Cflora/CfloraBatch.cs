namespace Rellax.Kernels;

/// <summary>
/// Which sample (user) each token row of a batch belongs to, for <see cref="CfloraLinear"/>: every row t has one
/// sample s = <see cref="SampleOfRow"/>[t] in [0, <see cref="Samples"/>), whose interaction matrix G_s applies to it.
/// Built and validated once on the host; backends copy the row index to the device on first use and keep it
/// until the batch is disposed.
/// </summary>
public sealed class CfloraBatch : IDisposable
{
    private readonly int[] _sampleOfRow;
    private readonly Dictionary<ComputeBackend, DeviceBuffer> _onDevice = new(ReferenceEqualityComparer.Instance);
    private bool _disposed;

    private CfloraBatch(int[] sampleOfRow, int samples, bool contiguous)
    {
        _sampleOfRow = sampleOfRow;
        Samples = samples;
        IsContiguous = contiguous;
    }

    /// <summary>Samples as contiguous runs of rows: sample s owns the next <paramref name="rowsPerSample"/>[s] rows.</summary>
    /// <exception cref="ArgumentException">No samples, or a negative row count.</exception>
    public static CfloraBatch FromLengths(params ReadOnlySpan<int> rowsPerSample)
    {
        if (rowsPerSample.IsEmpty) throw new ArgumentException("a batch needs at least one sample", nameof(rowsPerSample));
        long total = 0;
        for (int s = 0; s < rowsPerSample.Length; s++)
        {
            if (rowsPerSample[s] < 0)
                throw new ArgumentException($"sample {s} has a negative row count ({rowsPerSample[s]})", nameof(rowsPerSample));
            total += rowsPerSample[s];
        }
        if (total > int.MaxValue) throw new ArgumentException($"{total} rows in all: more than int.MaxValue", nameof(rowsPerSample));
        var index = new int[total];
        int row = 0;
        for (int s = 0; s < rowsPerSample.Length; s++)
            for (int i = 0; i < rowsPerSample[s]; i++) index[row++] = s;
        return new CfloraBatch(index, rowsPerSample.Length, contiguous: true);
    }

    /// <summary>Samples given row by row: row t belongs to sample <paramref name="sampleOfRow"/>[t], in any order.</summary>
    /// <param name="sampleOfRow">Sample index per row, each in [0, <paramref name="samples"/>).</param>
    /// <param name="samples">Number of samples (and of interaction matrices), at least 1.</param>
    /// <exception cref="ArgumentException">A row names a sample outside [0, samples).</exception>
    public static CfloraBatch FromRowIndex(ReadOnlySpan<int> sampleOfRow, int samples)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samples, 1);
        bool contiguous = true;
        for (int t = 0; t < sampleOfRow.Length; t++)
        {
            if ((uint)sampleOfRow[t] >= (uint)samples)
                throw new ArgumentException($"row {t} belongs to sample {sampleOfRow[t]}, outside [0, {samples})", nameof(sampleOfRow));
            if (t > 0 && sampleOfRow[t] < sampleOfRow[t - 1]) contiguous = false;
        }
        return new CfloraBatch(sampleOfRow.ToArray(), samples, contiguous);
    }

    /// <summary>Number of token rows T.</summary>
    public int Rows => _sampleOfRow.Length;

    /// <summary>Number of samples S.</summary>
    public int Samples { get; }

    /// <summary>Whether each sample's rows form one run and the runs are in sample order.</summary>
    public bool IsContiguous { get; }

    /// <summary>The sample of each row, [T].</summary>
    public ReadOnlySpan<int> SampleOfRow => _sampleOfRow;

    /// <summary>The row index as an i32 [T] tensor on <paramref name="backend"/>, uploaded once per backend.</summary>
    internal Tensor RowIndexOn(ComputeBackend backend)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_onDevice.TryGetValue(backend, out var buffer))
        {
            buffer = backend.Upload<int>(_sampleOfRow.Length == 0 ? [0] : _sampleOfRow);
            _onDevice[backend] = buffer;
        }
        return new Tensor(buffer, 0, _sampleOfRow.Length);
    }

    /// <summary>Frees the device copies of the row index.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _onDevice.Values) b.Dispose();
        _onDevice.Clear();
    }
}
