namespace Rellax.Runtime.Training;

/// <summary>
/// One trained tensor: its values and the gradient of the loss w.r.t. them, both f32 row-major arrays of
/// <see cref="Length"/> elements, allocated pinned so that a CPU backend can wrap them as tensors without copying
/// (<see cref="Rellax.Kernels.Cpu.CpuBackend.Wrap(float[])"/>).
/// </summary>
public sealed class Parameter
{
    /// <summary>A parameter with the given values (copied) and a zero gradient.</summary>
    /// <param name="name">The tensor's name in checkpoints (for example <c>fc_out.weight</c>).</param>
    /// <param name="shape">Its shape; the product must equal <paramref name="values"/>' length.</param>
    /// <param name="values">Initial values.</param>
    /// <param name="weightDecay">Whether decoupled weight decay applies to it (PyTorch's AdamW applies it to every
    /// parameter in a group; trainers may exclude biases or tables).</param>
    /// <exception cref="ArgumentException">The shape does not match the values.</exception>
    public Parameter(string name, int[] shape, ReadOnlySpan<float> values, bool weightDecay = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(shape);
        long count = shape.Aggregate(1L, (a, b) => b < 0 ? throw new ArgumentException($"parameter '{name}': negative size in shape [{string.Join(", ", shape)}]", nameof(shape)) : a * b);
        if (count != values.Length)
            throw new ArgumentException($"parameter '{name}': shape [{string.Join(", ", shape)}] holds {count} elements, but {values.Length} values were given", nameof(values));
        Name = name;
        Shape = [.. shape];
        Value = GC.AllocateArray<float>(values.Length, pinned: true);
        Grad = GC.AllocateArray<float>(values.Length, pinned: true);
        values.CopyTo(Value);
        WeightDecay = weightDecay;
    }

    /// <summary>The tensor's name in checkpoints.</summary>
    public string Name { get; }

    /// <summary>Its shape.</summary>
    public IReadOnlyList<int> Shape { get; }

    /// <summary>The values [Length] (pinned).</summary>
    public float[] Value { get; }

    /// <summary>The gradient [Length] (pinned): written by the model's backward, read by the optimizer.</summary>
    public float[] Grad { get; }

    /// <summary>Number of elements.</summary>
    public int Length => Value.Length;

    /// <summary>Whether decoupled weight decay applies to this parameter.</summary>
    public bool WeightDecay { get; }
}
