using System.Text;

namespace Rellax.Kernels;

/// <summary>
/// A row-major view into a <see cref="DeviceBuffer"/>: an element offset and a shape (rank 1 to 4).
/// A view owns nothing; the buffer it points into must outlive it.
/// </summary>
public readonly struct Tensor
{
    private readonly int[] _shape;

    /// <summary>A view of <paramref name="buffer"/> starting at element <paramref name="offset"/> with the given shape.</summary>
    /// <exception cref="ArgumentException">The shape is empty, has a negative dimension, or does not fit in the buffer.</exception>
    public Tensor(DeviceBuffer buffer, long offset, params ReadOnlySpan<int> shape)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (shape.Length is < 1 or > 4) throw new ArgumentException($"rank must be 1..4, got {shape.Length}", nameof(shape));
        long count = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape {Format(shape)}", nameof(shape));
            count *= d;
        }
        if (offset < 0 || offset + count > buffer.Length)
            throw new ArgumentException($"a view of shape {Format(shape)} at offset {offset} does not fit in a buffer of {buffer.Length} elements", nameof(shape));
        Buffer = buffer;
        Offset = offset;
        _shape = shape.ToArray();
    }

    /// <summary>The buffer this view points into.</summary>
    public DeviceBuffer Buffer { get; }

    /// <summary>First element of the view, in elements from the start of the buffer.</summary>
    public long Offset { get; }

    /// <summary>Dimensions, outermost first.</summary>
    public ReadOnlySpan<int> Shape => _shape;

    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;

    /// <summary>Element type.</summary>
    public DType DType => Buffer.DType;

    /// <summary>The backend that owns the memory.</summary>
    public ComputeBackend Backend => Buffer.Backend;

    /// <summary>Dimension <paramref name="axis"/>; negative axes count from the end.</summary>
    public int Dim(int axis) => _shape[axis < 0 ? _shape.Length + axis : axis];

    /// <summary>Number of elements.</summary>
    public long ElementCount
    {
        get { long n = 1; foreach (int d in _shape) n *= d; return n; }
    }

    /// <summary>Product of all dimensions but the last: the number of rows when the tensor is read as a matrix.</summary>
    public int Rows => (int)(ElementCount / Math.Max(1, _shape[^1]));

    /// <summary>The same elements under another shape with the same element count.</summary>
    public Tensor Reshape(params ReadOnlySpan<int> shape)
    {
        long count = 1;
        foreach (int d in shape) count *= d;
        if (count != ElementCount)
            throw new ArgumentException($"cannot reshape {this} ({ElementCount} elements) to {Format(shape)} ({count} elements)", nameof(shape));
        return new Tensor(Buffer, Offset, shape);
    }

    /// <summary>Rows [<paramref name="start"/>, start + <paramref name="count"/>) along the outermost dimension.</summary>
    public Tensor Slice(int start, int count)
    {
        if (start < 0 || count < 0 || start + count > _shape[0])
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) are outside {this}");
        long inner = ElementCount / Math.Max(1, _shape[0]);
        var shape = _shape.ToArray();
        shape[0] = count;
        return new Tensor(Buffer, Offset + start * inner, shape);
    }

    /// <summary>Shape and dtype, e.g. <c>f32[3, 64]</c>.</summary>
    public override string ToString() => $"{DType.ToString().ToLowerInvariant()}{Format(_shape)}";

    internal static string Format(ReadOnlySpan<int> shape)
    {
        var sb = new StringBuilder("[");
        for (int i = 0; i < shape.Length; i++) sb.Append(i == 0 ? "" : ", ").Append(shape[i]);
        return sb.Append(']').ToString();
    }
}
