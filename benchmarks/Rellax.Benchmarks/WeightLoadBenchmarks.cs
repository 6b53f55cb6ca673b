using System.Text;
using BenchmarkDotNet.Attributes;
using Rellax.Runtime;

namespace Rellax.Benchmarks;

/// <summary>
/// The cost of the runtime's choice to widen F16/BF16 checkpoints to f32 once at load: <see cref="SafeTensorsFile.ReadFloat32(string, Span{float})"/>
/// of one 4096×4096 tensor (16 Mi elements: 64 MiB as F32, 32 MiB as F16/BF16) from a memory-mapped file that is
/// already in the page cache, into a preallocated f32 array. F32 is the plain copy the conversion is compared with.
/// </summary>
[MemoryDiagnoser]
public class WeightLoadBenchmarks
{
    private const int Rows = 4096, Cols = 4096;
    private string _path = "";
    private SafeTensorsFile _file = null!;
    private float[] _destination = null!;

    /// <summary>Checkpoint dtype of the tensor.</summary>
    [Params("F32", "F16", "BF16")]
    public string DType { get; set; } = "F32";

    [GlobalSetup]
    public void Setup()
    {
        _path = Path.Combine(Path.GetTempPath(), $"rellax-bench-{DType}-{Environment.ProcessId}.safetensors");
        int size = DType == "F32" ? 4 : 2;
        long bytes = (long)Rows * Cols * size;
        string header = $"{{\"w\":{{\"dtype\":\"{DType}\",\"shape\":[{Rows},{Cols}],\"data_offsets\":[0,{bytes}]}}}}";
        var json = Encoding.UTF8.GetBytes(header);
        var rng = new Random(1);
        using (var stream = File.Create(_path))
        using (var w = new BinaryWriter(stream))
        {
            w.Write((ulong)json.Length);
            w.Write(json);
            for (long i = 0; i < (long)Rows * Cols; i++)
            {
                float v = (float)(rng.NextDouble() * 2 - 1);
                if (DType == "F32") w.Write(v);
                else if (DType == "F16") w.Write(BitConverter.HalfToUInt16Bits((Half)v));
                else w.Write((ushort)(BitConverter.SingleToUInt32Bits(v) >> 16));
            }
        }
        _file = SafeTensorsFile.Open(_path);
        _destination = new float[Rows * Cols];
        _file.ReadFloat32("w", _destination); // fault the mapping in once
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _file.Dispose();
        File.Delete(_path);
    }

    /// <summary>Reads (and for F16/BF16 widens) the whole tensor into f32.</summary>
    [Benchmark]
    public void ReadAsFloat32() => _file.ReadFloat32("w", _destination);
}
