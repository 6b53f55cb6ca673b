using NUnit.Framework;
using System.Text;
using System.Text.Json;

namespace Rellax.Tests.Model;

/// <summary>
/// A minimal safetensors writer for tests (the library only reads the format): header JSON sorted by name,
/// tensors laid out back to back, F32 / F16 / BF16.
/// </summary>
internal static class SafeTensorsWriter
{
    public static void Write(string path, IReadOnlyDictionary<string, (int[] Shape, float[] Data)> tensors, string dtype = "F32")
    {
        int size = dtype switch { "F32" => 4, "F16" or "BF16" => 2, _ => throw new ArgumentException(dtype) };
        var header = new Dictionary<string, object> { ["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" } };
        long offset = 0;
        var names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        foreach (var name in names)
        {
            long bytes = (long)tensors[name].Data.Length * size;
            header[name] = new { dtype, shape = tensors[name].Shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        using var stream = File.Create(path);
        using var w = new BinaryWriter(stream);
        w.Write((ulong)json.Length);
        w.Write(json);
        foreach (var name in names)
            foreach (float f in tensors[name].Data)
            {
                switch (dtype)
                {
                    case "F32": w.Write(f); break;
                    case "F16": w.Write(BitConverter.HalfToUInt16Bits((Half)f)); break;
                    default: w.Write((ushort)(BitConverter.SingleToUInt32Bits(f) >> 16)); break; // truncation: exact for values made bf16-representable
                }
            }
    }
}
