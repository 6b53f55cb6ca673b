namespace Rellax.Kernels.Cuda;

/// <summary>A CUDA compute capability, e.g. 9.0 for H100 (<c>sm_90</c>).</summary>
/// <param name="Major">Major version.</param>
/// <param name="Minor">Minor version.</param>
public readonly record struct CudaArchitecture(int Major, int Minor) : IComparable<CudaArchitecture>
{
    /// <summary>Ampere A100 (8.0).</summary>
    public static CudaArchitecture Sm80 => new(8, 0);

    /// <summary>Hopper H100/H200 (9.0).</summary>
    public static CudaArchitecture Sm90 => new(9, 0);

    /// <summary>The two-digit number NVRTC and nvcc use, e.g. 90.</summary>
    public int Number => Major * 10 + Minor;

    /// <summary>The virtual architecture, e.g. <c>compute_90</c> (PTX target).</summary>
    public string VirtualName => $"compute_{Number}";

    /// <summary>The real architecture, e.g. <c>sm_90</c> (cubin target).</summary>
    public string RealName => $"sm_{Number}";

    /// <summary>Builds one from NVRTC's two-digit number (e.g. 86 gives 8.6).</summary>
    /// <param name="number">Two- or three-digit architecture number (e.g. 90, 120).</param>
    public static CudaArchitecture FromNumber(int number) => new(number / 10, number % 10);

    /// <inheritdoc />
    public int CompareTo(CudaArchitecture other) => Number.CompareTo(other.Number);

    /// <inheritdoc />
    public override string ToString() => $"{Major}.{Minor}";
}

/// <summary>What NVRTC produces: PTX (JIT-compiled by the driver at load) or a cubin (native code, one architecture).</summary>
internal enum CudaImageKind
{
    /// <summary>PTX text for a virtual architecture (<c>compute_XY</c>); runs on that and newer GPUs.</summary>
    Ptx,

    /// <summary>A cubin for a real architecture (<c>sm_XY</c>); runs on that GPU family only.</summary>
    Cubin,
}

/// <summary>A compiled module image.</summary>
/// <param name="SourceName">The source it came from, e.g. <c>rmsnorm.cu</c>.</param>
/// <param name="Kind">PTX or cubin.</param>
/// <param name="Architecture">The target architecture.</param>
/// <param name="Bytes">The image (PTX text without NUL, or cubin bytes).</param>
/// <param name="Log">NVRTC's log (warnings); empty when the image came from the cache.</param>
/// <param name="FromCache">Whether the image came from the on-disk cache rather than NVRTC.</param>
internal sealed record CudaImage(string SourceName, CudaImageKind Kind, CudaArchitecture Architecture, byte[] Bytes, string Log, bool FromCache);
