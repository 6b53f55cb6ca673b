namespace Rellax.Interop;

/// <summary>A CUDA driver API call failed. The message names the call, the error name and its description.</summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception for a failed driver call.</summary>
    /// <param name="call">The driver function (and context) that failed, e.g. <c>cuModuleLoadDataEx(rmsnorm.cubin)</c>.</param>
    /// <param name="result">The driver's result code.</param>
    /// <param name="detail">Extra text such as a JIT log; may be empty.</param>
    public CudaException(string call, CUresult result, string? detail = null)
        : base(Format(call, result, detail))
    {
        Call = call;
        Result = result;
        Detail = detail ?? string.Empty;
    }

    /// <summary>The failing call.</summary>
    public string Call { get; }

    /// <summary>The driver's result code.</summary>
    public CUresult Result { get; }

    /// <summary>Extra text (e.g. the JIT error log), possibly empty.</summary>
    public string Detail { get; }

    private static string Format(string call, CUresult result, string? detail)
    {
        var (name, text) = CudaDriver.DescribeError(result);
        var message = $"{call} failed: {name} ({(int)result}): {text}";
        return string.IsNullOrWhiteSpace(detail) ? message : message + Environment.NewLine + detail.TrimEnd();
    }
}

/// <summary>An NVRTC call failed. The message names the call, the NVRTC error and, for compilations, the log.</summary>
public sealed class NvrtcException : Exception
{
    /// <summary>Creates the exception for a failed NVRTC call.</summary>
    /// <param name="call">The NVRTC function and the source it worked on, e.g. <c>nvrtcCompileProgram(rmsnorm.cu)</c>.</param>
    /// <param name="result">NVRTC's result code.</param>
    /// <param name="log">The compile log, possibly empty.</param>
    public NvrtcException(string call, NvrtcResult result, string? log = null)
        : base(Format(call, result, log))
    {
        Call = call;
        Result = result;
        Log = log ?? string.Empty;
    }

    /// <summary>The failing call.</summary>
    public string Call { get; }

    /// <summary>NVRTC's result code.</summary>
    public NvrtcResult Result { get; }

    /// <summary>The compile log (empty when the call was not a compilation).</summary>
    public string Log { get; }

    private static string Format(string call, NvrtcResult result, string? log)
    {
        var message = $"{call} failed: {Nvrtc.DescribeError(result)} ({(int)result})";
        return string.IsNullOrWhiteSpace(log) ? message : message + Environment.NewLine + log.TrimEnd();
    }
}
