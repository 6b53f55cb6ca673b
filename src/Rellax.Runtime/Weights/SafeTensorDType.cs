namespace Rellax.Runtime;

/// <summary>
/// Element types a safetensors file can declare (the <c>dtype</c> strings of the format).
/// Only <see cref="F32"/>, <see cref="F16"/> and <see cref="BF16"/> can be read as float32;
/// the others are parsed and validated so that a file holding them still opens.
/// </summary>
public enum SafeTensorDType
{
    /// <summary>IEEE 754 binary32, 4 bytes (<c>"F32"</c>).</summary>
    F32,
    /// <summary>IEEE 754 binary16, 2 bytes (<c>"F16"</c>).</summary>
    F16,
    /// <summary>bfloat16 (upper half of a binary32), 2 bytes (<c>"BF16"</c>).</summary>
    BF16,
    /// <summary>Signed 8-bit integer (<c>"I8"</c>).</summary>
    I8,
    /// <summary>Signed 16-bit integer (<c>"I16"</c>).</summary>
    I16,
    /// <summary>Signed 32-bit integer (<c>"I32"</c>).</summary>
    I32,
    /// <summary>Signed 64-bit integer (<c>"I64"</c>).</summary>
    I64,
    /// <summary>Unsigned 8-bit integer (<c>"U8"</c>).</summary>
    U8,
    /// <summary>Unsigned 16-bit integer (<c>"U16"</c>).</summary>
    U16,
    /// <summary>Unsigned 32-bit integer (<c>"U32"</c>).</summary>
    U32,
    /// <summary>Unsigned 64-bit integer (<c>"U64"</c>).</summary>
    U64,
    /// <summary>IEEE 754 binary64, 8 bytes (<c>"F64"</c>).</summary>
    F64,
    /// <summary>Boolean, one byte per element (<c>"BOOL"</c>).</summary>
    Bool,
    /// <summary>FP8 E4M3, 1 byte (<c>"F8_E4M3"</c>).</summary>
    F8E4M3,
    /// <summary>FP8 E5M2, 1 byte (<c>"F8_E5M2"</c>).</summary>
    F8E5M2,
}

/// <summary>Helpers for <see cref="SafeTensorDType"/>.</summary>
public static class SafeTensorDTypes
{
    /// <summary>Size in bytes of one element of <paramref name="dtype"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An undefined enum value.</exception>
    public static int SizeInBytes(this SafeTensorDType dtype) => dtype switch
    {
        SafeTensorDType.F64 or SafeTensorDType.I64 or SafeTensorDType.U64 => 8,
        SafeTensorDType.F32 or SafeTensorDType.I32 or SafeTensorDType.U32 => 4,
        SafeTensorDType.F16 or SafeTensorDType.BF16 or SafeTensorDType.I16 or SafeTensorDType.U16 => 2,
        SafeTensorDType.I8 or SafeTensorDType.U8 or SafeTensorDType.Bool
            or SafeTensorDType.F8E4M3 or SafeTensorDType.F8E5M2 => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown safetensors dtype."),
    };

    /// <summary>The format's <c>dtype</c> string of <paramref name="dtype"/>, e.g. <c>"F32"</c> or <c>"F8_E4M3"</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An undefined enum value.</exception>
    public static string ToFormatString(this SafeTensorDType dtype) => dtype switch
    {
        SafeTensorDType.Bool => "BOOL",
        SafeTensorDType.F8E4M3 => "F8_E4M3",
        SafeTensorDType.F8E5M2 => "F8_E5M2",
        _ when Enum.IsDefined(dtype) => dtype.ToString(),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown safetensors dtype."),
    };

    /// <summary>Parses a safetensors <c>dtype</c> string (case-sensitive, as the format writes it).</summary>
    /// <returns><see langword="true"/> when <paramref name="text"/> names a known dtype.</returns>
    public static bool TryParse(string text, out SafeTensorDType dtype)
    {
        switch (text)
        {
            case "F64": dtype = SafeTensorDType.F64; return true;
            case "F32": dtype = SafeTensorDType.F32; return true;
            case "F16": dtype = SafeTensorDType.F16; return true;
            case "BF16": dtype = SafeTensorDType.BF16; return true;
            case "I64": dtype = SafeTensorDType.I64; return true;
            case "I32": dtype = SafeTensorDType.I32; return true;
            case "I16": dtype = SafeTensorDType.I16; return true;
            case "I8": dtype = SafeTensorDType.I8; return true;
            case "U64": dtype = SafeTensorDType.U64; return true;
            case "U32": dtype = SafeTensorDType.U32; return true;
            case "U16": dtype = SafeTensorDType.U16; return true;
            case "U8": dtype = SafeTensorDType.U8; return true;
            case "BOOL": dtype = SafeTensorDType.Bool; return true;
            case "F8_E4M3": dtype = SafeTensorDType.F8E4M3; return true;
            case "F8_E5M2": dtype = SafeTensorDType.F8E5M2; return true;
            default: dtype = default; return false;
        }
    }
}

/// <summary>
/// One tensor entry of a safetensors header.
/// </summary>
/// <param name="Name">Tensor name as written in the header, e.g. <c>model.layers.0.self_attn.q_proj.weight</c>.</param>
/// <param name="DType">Element type.</param>
/// <param name="Shape">Dimensions, outermost first (row-major); empty for a scalar. Do not mutate.</param>
/// <param name="DataOffset">Absolute byte offset of the first element in the file (8 + header length + begin).</param>
/// <param name="ByteLength">Number of bytes (element count × dtype size).</param>
public sealed record SafeTensorInfo(string Name, SafeTensorDType DType, int[] Shape, long DataOffset, long ByteLength)
{
    /// <summary>Number of elements: the product of <see cref="Shape"/> (1 for a scalar).</summary>
    public long ElementCount => ByteLength / DType.SizeInBytes();
}
