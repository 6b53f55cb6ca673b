using System.Diagnostics;

namespace Rellax.Kernels;

/// <summary>
/// One op run on one backend for <see cref="KernelSelftest"/>: uploads host arrays as tensors (owning and freeing them),
/// times the op's call with the backend synchronized before and after, and reads outputs back.
/// </summary>
internal sealed class SelftestRun(ComputeBackend backend) : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    public ComputeBackend Backend { get; } = backend;

    /// <summary>Total synchronized wall time of the <see cref="Time"/> calls, ms.</summary>
    public double Milliseconds { get; private set; }

    public Tensor Up<T>(T[] data, params int[] shape) where T : unmanaged => Own(Backend.Upload<T>(data)).AsTensor(shape);

    public Tensor Zeros(DType dtype, params int[] shape) => Own(Backend.Allocate(dtype, shape)).AsTensor(shape);

    public Tensor Zeros(params int[] shape) => Zeros(DType.F32, shape);

    public T Own<T>(T resource) where T : IDisposable
    {
        _owned.Add(resource);
        return resource;
    }

    public void Time(Action op)
    {
        Backend.Synchronize();
        long start = Stopwatch.GetTimestamp();
        op();
        Backend.Synchronize();
        Milliseconds += Stopwatch.GetElapsedTime(start).TotalMilliseconds;
    }

    /// <summary>The outputs, read back and concatenated in order (f32 as is; i32 converted exactly for the small values used).</summary>
    public static float[] Read(params Tensor[] outputs)
    {
        var all = new List<float>();
        foreach (var t in outputs)
            all.AddRange(t.DType == DType.I32 ? t.ToArray<int>().Select(v => (float)v) : t.ToArray<float>());
        return [.. all];
    }

    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
    }
}
