using System.Runtime.InteropServices;
using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>
/// Item vectors for SUBR that the caller gives instead of the LLM's (SPEC §2 allows any item embedding): row k is item k
/// of the dataset (<see cref="RatingDataset.Items"/>), <see cref="Dim"/> floats each.
/// </summary>
public sealed class ItemVectors
{
    /// <summary>Wraps [rows, <paramref name="dim"/>] row-major values (kept, not copied).</summary>
    /// <exception cref="ArgumentException">The length is not a multiple of <paramref name="dim"/>, or a value is not finite (named by row and column).</exception>
    public ItemVectors(float[] values, int dim)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentOutOfRangeException.ThrowIfLessThan(dim, 1);
        if (values.Length == 0 || values.Length % dim != 0)
            throw new ArgumentException($"{values.Length} values are not a whole number (>= 1) of rows of {dim}", nameof(values));
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new ArgumentException($"item vector {i / dim}, column {i % dim} is {values[i]}", nameof(values));
        Values = values;
        Dim = dim;
    }

    /// <summary>[Rows, Dim] row-major.</summary>
    public float[] Values { get; }

    /// <summary>Floats per item.</summary>
    public int Dim { get; }

    /// <summary>Number of items.</summary>
    public int Rows => Values.Length / Dim;

    /// <summary>
    /// Reads a safetensors file holding <c>vectors</c> (or <c>embeddings</c>, as <c>rellax embed</c> writes it) F32/F16/BF16
    /// [N, D] and, optionally, <c>item_ids</c> I64 [N] (without it, row k is item k).
    /// </summary>
    /// <returns>The values widened to f32, N, D, and the ids (empty when the file has none).</returns>
    /// <exception cref="InvalidDataException">A missing or mis-shaped tensor; the message names the file and the tensor.</exception>
    public static (float[] Values, int Rows, int Dim, long[] ItemIds) ReadFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        InputPaths.RequireFile(path, "vectors file");
        using var file = SafeTensorsFile.Open(path);
        // 'vectors', or 'embeddings' as `rellax embed` writes it (a saved I8 index, with 'scales', is not input).
        string? name = file.Contains("vectors") ? "vectors" : file.Contains("embeddings") && !file.Contains("scales") ? "embeddings" : null;
        if (name is null)
            throw new InvalidDataException($"'{path}' has no 'vectors' (or F32/F16/BF16 'embeddings') tensor (found: {string.Join(", ", file.Tensors.Keys.Order())})");
        var info = file.Info(name);
        if (info.Shape.Length != 2 || info.Shape[0] < 1 || info.Shape[1] < 1)
            throw new InvalidDataException($"'{path}': '{name}' must be [N, D] with N, D >= 1, got [{string.Join(", ", info.Shape)}]");
        int n = info.Shape[0], d = info.Shape[1];
        float[] data = file.ReadFloat32(name);
        long[] ids = [];
        if (file.Contains("item_ids"))
        {
            var i = file.Info("item_ids");
            if (i.DType != SafeTensorDType.I64 || i.Shape.Length != 1 || i.Shape[0] != n)
                throw new InvalidDataException($"'{path}': 'item_ids' must be I64 [{n}], got {i.DType.ToFormatString()} [{string.Join(", ", i.Shape)}]");
            ids = MemoryMarshal.Cast<byte, long>(file.GetBytes("item_ids")).ToArray();
        }
        return (data, n, d, ids);
    }

    /// <summary>
    /// Reads <see cref="ReadFile"/>'s format for a dataset of <paramref name="itemCount"/> items: the file's <c>item_ids</c>
    /// (dataset item rows, e.g. the <c>id</c>s of a prepared <c>items.jsonl</c>) must name every item exactly once, in any
    /// order; rows are put in item order.
    /// </summary>
    /// <exception cref="InvalidDataException">An item missing, unknown or given twice, or a bad value; the message names the file and the item.</exception>
    public static ItemVectors Load(string path, int itemCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(itemCount, 1);
        var (data, n, d, ids) = ReadFile(path);
        if (n != itemCount)
            throw new InvalidDataException($"'{path}' has {n} vectors, but the dataset has {itemCount} items (one vector per item is needed)");
        var values = data;
        if (ids.Length > 0)
        {
            values = new float[data.Length];
            var seen = new bool[itemCount];
            for (int r = 0; r < n; r++)
            {
                long id = ids[r];
                if (id < 0 || id >= itemCount) throw new InvalidDataException($"'{path}': item_ids[{r}] = {id} is not an item of the dataset (0 to {itemCount - 1})");
                if (seen[id]) throw new InvalidDataException($"'{path}': item {id} has two vectors");
                seen[id] = true;
                data.AsSpan(r * d, d).CopyTo(values.AsSpan((int)id * d, d));
            }
        }
        try { return new ItemVectors(values, d); }
        catch (ArgumentException e) { throw new InvalidDataException($"'{path}': {e.Message}", e); }
    }
}
