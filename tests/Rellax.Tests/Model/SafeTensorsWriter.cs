using Rellax.Runtime;

namespace Rellax.Tests.Model;

/// <summary>
/// Writes float test weights through the library's <see cref="Rellax.Runtime.SafeTensorsWriter"/> as F32, F16 (rounded) or
/// BF16 (truncated: exact for values made bf16-representable), with <c>format = pt</c> metadata as PyTorch writes.
/// </summary>
internal static class SafeTensorsWriter
{
    public static void Write(string path, IReadOnlyDictionary<string, (int[] Shape, float[] Data)> tensors, string dtype = "F32")
    {
        var writer = new Rellax.Runtime.SafeTensorsWriter();
        writer.Metadata["format"] = "pt";
        foreach (var (name, (shape, data)) in tensors)
        {
            switch (dtype)
            {
                case "F32": writer.Add<float>(name, SafeTensorDType.F32, shape, data); break;
                case "F16": writer.Add<Half>(name, SafeTensorDType.F16, shape, data.Select(f => (Half)f).ToArray()); break;
                case "BF16": writer.Add<ushort>(name, SafeTensorDType.BF16, shape, data.Select(f => (ushort)(BitConverter.SingleToUInt32Bits(f) >> 16)).ToArray()); break;
                default: throw new ArgumentException($"unsupported dtype {dtype}", nameof(dtype));
            }
        }
        writer.Save(path);
    }
}
