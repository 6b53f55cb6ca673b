using System.Runtime.InteropServices;

namespace Rellax.Kernels;

/// <summary>How the rows of a <see cref="SubrTable"/> are compared with the target's row.</summary>
public enum SubrSimilarity
{
    /// <summary>Cosine similarity: rows are normalised to unit length once, when the table is built, so a score is a dot product.</summary>
    Cosine,

    /// <summary>The raw dot product of the vectors as given (the reference code's mode for ML-25M and BookCrossing).</summary>
    Dot,
}

/// <summary>
/// An item-embedding table E [N, d] on one backend, ready for <see cref="SubrTopK"/>: validated (every value
/// finite), normalised for <see cref="SubrSimilarity.Cosine"/>, and stored as f32, f16, or i8 with one f32 scale
/// per row (symmetric: <c>E[i, c] ≈ scale[i] · q[i, c]</c>, q in [-127, 127]). Owns its device memory.
/// </summary>
public sealed class SubrTable : IDisposable
{
    /// <summary>The largest d an i8 table may have, so that an exact i32 dot product cannot overflow (127² · d &lt; 2³¹).</summary>
    public const int MaxInt8Dim = 131_072;

    private readonly DeviceBuffer _embeddings;
    private readonly DeviceBuffer? _scales;

    private SubrTable(DeviceBuffer embeddings, DeviceBuffer? scales, int rows, int dim, SubrSimilarity similarity)
    {
        _embeddings = embeddings;
        _scales = scales;
        Rows = rows;
        Dim = dim;
        Similarity = similarity;
    }

    /// <summary>Number of items N (table rows).</summary>
    public int Rows { get; }

    /// <summary>Embedding width d.</summary>
    public int Dim { get; }

    /// <summary>Element type of the stored rows: f32, f16 or i8.</summary>
    public DType Storage => _embeddings.DType;

    /// <summary>Whether rows were normalised at build time (cosine) or kept as given (dot).</summary>
    public SubrSimilarity Similarity { get; }

    /// <summary>The backend that holds the table.</summary>
    public ComputeBackend Backend => _embeddings.Backend;

    /// <summary>The stored rows, [N, d] of <see cref="Storage"/>.</summary>
    public Tensor Embeddings
    {
        get
        {
            ObjectDisposedException.ThrowIf(_embeddings.IsDisposed, this);
            return new Tensor(_embeddings, 0, Rows, Dim);
        }
    }

    /// <summary>The per-row scales of an i8 table, f32 [N]; null for f32 and f16 tables.</summary>
    public Tensor? Scales => _scales is null ? null : new Tensor(_scales, 0, Rows);

    /// <summary>
    /// Builds a table from full-precision item vectors: checks that every value is finite, normalises each row to
    /// unit length for <see cref="SubrSimilarity.Cosine"/> (an all-zero row stays zero and scores 0 against
    /// everything), then stores the rows as <paramref name="storage"/>.
    /// </summary>
    /// <param name="backend">Where the table lives.</param>
    /// <param name="vectors">Row-major f32 [rows, dim].</param>
    /// <param name="rows">N, at least 1.</param>
    /// <param name="dim">d, at least 1 (at most <see cref="MaxInt8Dim"/> for i8).</param>
    /// <param name="storage">f32, f16 or i8.</param>
    /// <param name="similarity">Cosine (normalise rows) or raw dot product.</param>
    /// <exception cref="ArgumentException">Wrong length, a NaN or infinite value (the message names the row and
    /// column), a value outside the f16 range for f16 storage, or an unsupported storage type.</exception>
    public static SubrTable Create(ComputeBackend backend, ReadOnlySpan<float> vectors, int rows, int dim,
        DType storage = DType.F32, SubrSimilarity similarity = SubrSimilarity.Cosine)
    {
        ArgumentNullException.ThrowIfNull(backend);
        CheckShape(rows, dim, storage);
        if (vectors.Length != (long)rows * dim)
            throw new ArgumentException($"vectors has {vectors.Length} values, but [rows, dim] = [{rows}, {dim}] needs {(long)rows * dim}", nameof(vectors));
        CheckFinite(vectors, dim, nameof(vectors));

        var row = new float[dim];
        var stored = backend.Allocate(storage, (long)rows * dim);
        DeviceBuffer? scales = null;
        try
        {
            float[]? scaleValues = storage == DType.I8 ? new float[rows] : null;
            // Convert in slabs of rows, so the host copy stays small for large tables.
            int slab = Math.Max(1, (1 << 20) / dim);
            var f32 = storage == DType.F32 ? new float[(long)Math.Min(slab, rows) * dim] : null;
            var f16 = storage == DType.F16 ? new Half[(long)Math.Min(slab, rows) * dim] : null;
            var i8 = storage == DType.I8 ? new sbyte[(long)Math.Min(slab, rows) * dim] : null;
            for (int r0 = 0; r0 < rows; r0 += slab)
            {
                int n = Math.Min(slab, rows - r0);
                for (int i = 0; i < n; i++)
                {
                    int r = r0 + i;
                    vectors.Slice(r * dim, dim).CopyTo(row);
                    if (similarity == SubrSimilarity.Cosine) Normalize(row);
                    switch (storage)
                    {
                        case DType.F32:
                            row.CopyTo(f32.AsSpan(i * dim, dim));
                            break;
                        case DType.F16:
                            for (int c = 0; c < dim; c++)
                            {
                                var h = (Half)row[c];
                                if (Half.IsInfinity(h))
                                    throw new ArgumentException($"vectors row {r}, column {c} is {row[c]}, outside the f16 range (±65504); store the table as f32, or use cosine similarity", nameof(vectors));
                                f16![i * dim + c] = h;
                            }
                            break;
                        default:
                            scaleValues![r] = Quantize(row, i8.AsSpan(i * dim, dim));
                            break;
                    }
                }
                long at = (long)r0 * dim, count = (long)n * dim;
                switch (storage)
                {
                    case DType.F32: stored.CopyFrom<float>(f32.AsSpan(0, (int)count), at); break;
                    case DType.F16: stored.CopyFrom<Half>(f16.AsSpan(0, (int)count), at); break;
                    default: stored.CopyFrom<sbyte>(i8.AsSpan(0, (int)count), at); break;
                }
            }
            if (scaleValues is not null) scales = backend.Upload<float>(scaleValues);
            return new SubrTable(stored, scales, rows, dim, similarity);
        }
        catch
        {
            stored.Dispose();
            scales?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Wraps rows that are already stored (e.g. read from a saved index) without re-normalising or re-quantising
    /// them; checks that every value and scale is finite.
    /// </summary>
    /// <param name="backend">Where the table lives.</param>
    /// <param name="storage">f32, f16 or i8: the element type of <paramref name="rowBytes"/>.</param>
    /// <param name="rowBytes">The raw little-endian elements, [rows, dim] of <paramref name="storage"/>.</param>
    /// <param name="scales">f32 [rows] for i8 storage; must be empty otherwise.</param>
    /// <param name="rows">N, at least 1.</param>
    /// <param name="dim">d, at least 1.</param>
    /// <param name="similarity">What the rows hold: normalised (cosine) or raw (dot) vectors. Recorded, not checked.</param>
    /// <exception cref="ArgumentException">Wrong lengths, a non-finite value or scale (named by row and column).</exception>
    public static SubrTable FromStored(ComputeBackend backend, DType storage, ReadOnlySpan<byte> rowBytes, ReadOnlySpan<float> scales,
        int rows, int dim, SubrSimilarity similarity)
    {
        ArgumentNullException.ThrowIfNull(backend);
        CheckShape(rows, dim, storage);
        long bytes = (long)rows * dim * storage.SizeInBytes();
        if (rowBytes.Length != bytes)
            throw new ArgumentException($"rowBytes has {rowBytes.Length} bytes, but {storage.ToString().ToLowerInvariant()}[{rows}, {dim}] needs {bytes}", nameof(rowBytes));
        if (storage == DType.I8)
        {
            if (scales.Length != rows)
                throw new ArgumentException($"an i8 table needs one scale per row: {rows}, got {scales.Length}", nameof(scales));
            for (int r = 0; r < rows; r++)
                if (!float.IsFinite(scales[r]) || scales[r] < 0)
                    throw new ArgumentException($"scales[{r}] is {scales[r]}; scales must be finite and >= 0", nameof(scales));
        }
        else
        {
            if (!scales.IsEmpty) throw new ArgumentException($"only i8 tables have scales, this one is {storage.ToString().ToLowerInvariant()}", nameof(scales));
            if (storage == DType.F32) CheckFinite(MemoryMarshal.Cast<byte, float>(rowBytes), dim, nameof(rowBytes));
            else CheckFinite(MemoryMarshal.Cast<byte, Half>(rowBytes), dim, nameof(rowBytes));
        }
        var stored = backend.Allocate(storage, (long)rows * dim);
        DeviceBuffer? scaleBuffer = null;
        try
        {
            switch (storage)
            {
                case DType.F32: stored.CopyFrom(MemoryMarshal.Cast<byte, float>(rowBytes)); break;
                case DType.F16: stored.CopyFrom(MemoryMarshal.Cast<byte, Half>(rowBytes)); break;
                default: stored.CopyFrom(MemoryMarshal.Cast<byte, sbyte>(rowBytes)); break;
            }
            if (storage == DType.I8) scaleBuffer = backend.Upload(scales);
            return new SubrTable(stored, scaleBuffer, rows, dim, similarity);
        }
        catch
        {
            stored.Dispose();
            scaleBuffer?.Dispose();
            throw;
        }
    }

    /// <summary>Copies the stored rows (raw elements of <see cref="Storage"/>) and, for i8, the row scales to the host.</summary>
    /// <param name="rowBytes">Destination of N · d · element-size bytes.</param>
    /// <param name="scales">Destination of N scales for an i8 table; empty otherwise.</param>
    /// <exception cref="ArgumentException">A destination has the wrong length.</exception>
    public void CopyStoredTo(Span<byte> rowBytes, Span<float> scales)
    {
        ObjectDisposedException.ThrowIf(_embeddings.IsDisposed, this);
        if (rowBytes.Length != _embeddings.SizeInBytes)
            throw new ArgumentException($"rowBytes must hold {_embeddings.SizeInBytes} bytes, got {rowBytes.Length}", nameof(rowBytes));
        if (scales.Length != (_scales is null ? 0 : Rows))
            throw new ArgumentException($"scales must hold {(_scales is null ? 0 : Rows)} values, got {scales.Length}", nameof(scales));
        switch (Storage)
        {
            case DType.F32: _embeddings.CopyTo(MemoryMarshal.Cast<byte, float>(rowBytes)); break;
            case DType.F16: _embeddings.CopyTo(MemoryMarshal.Cast<byte, Half>(rowBytes)); break;
            default: _embeddings.CopyTo(MemoryMarshal.Cast<byte, sbyte>(rowBytes)); break;
        }
        _scales?.CopyTo(scales);
    }

    /// <summary>Row <paramref name="row"/> as f32 on the host, dequantised for i8 (for tests and inspection; slow).</summary>
    public float[] ReadRow(int row)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, Rows);
        var result = new float[Dim];
        long at = (long)row * Dim;
        switch (Storage)
        {
            case DType.F32:
                _embeddings.CopyTo<float>(result, at);
                break;
            case DType.F16:
                var h = new Half[Dim];
                _embeddings.CopyTo<Half>(h, at);
                for (int c = 0; c < Dim; c++) result[c] = (float)h[c];
                break;
            default:
                var q = new sbyte[Dim];
                var s = new float[1];
                _embeddings.CopyTo<sbyte>(q, at);
                _scales!.CopyTo<float>(s, row);
                for (int c = 0; c < Dim; c++) result[c] = q[c] * s[0];
                break;
        }
        return result;
    }

    /// <summary>Symmetric per-row quantisation: scale = max|x| / 127, q = round(x / scale). Returns the scale (0 for a zero row).</summary>
    internal static float Quantize(ReadOnlySpan<float> row, Span<sbyte> q)
    {
        float max = 0;
        foreach (float v in row) max = MathF.Max(max, MathF.Abs(v));
        if (max == 0)
        {
            q.Clear();
            return 0;
        }
        float scale = max / 127f, inv = 127f / max;
        for (int c = 0; c < row.Length; c++) q[c] = (sbyte)Math.Clamp(MathF.Round(row[c] * inv, MidpointRounding.ToEven), -127, 127);
        return scale;
    }

    private static void Normalize(Span<float> row)
    {
        double ss = 0;
        foreach (float v in row) ss += (double)v * v;
        if (ss == 0) return;
        double inv = 1.0 / Math.Sqrt(ss);
        for (int c = 0; c < row.Length; c++) row[c] = (float)(row[c] * inv);
    }

    private static void CheckShape(int rows, int dim, DType storage)
    {
        if (rows < 1) throw new ArgumentOutOfRangeException(nameof(rows), rows, "a table needs at least one row");
        if (dim < 1) throw new ArgumentOutOfRangeException(nameof(dim), dim, "rows need at least one column");
        if (storage is not (DType.F32 or DType.F16 or DType.I8))
            throw new ArgumentException($"a SUBR table is stored as f32, f16 or i8, not {storage.ToString().ToLowerInvariant()}", nameof(storage));
        if (storage == DType.I8 && dim > MaxInt8Dim)
            throw new ArgumentOutOfRangeException(nameof(dim), dim, $"an i8 table may have at most {MaxInt8Dim} columns (exact i32 dot products)");
    }

    private static void CheckFinite(ReadOnlySpan<float> values, int dim, string name)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new ArgumentException($"{name} row {i / dim}, column {i % dim} is {values[i]}: item vectors must be finite", name);
    }

    private static void CheckFinite(ReadOnlySpan<Half> values, int dim, string name)
    {
        for (int i = 0; i < values.Length; i++)
            if (!Half.IsFinite(values[i]))
                throw new ArgumentException($"{name} row {i / dim}, column {i % dim} is {values[i]}: item vectors must be finite", name);
    }

    /// <summary>Frees the device memory.</summary>
    public void Dispose()
    {
        _embeddings.Dispose();
        _scales?.Dispose();
    }
}
