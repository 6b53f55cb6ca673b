using System.Runtime.InteropServices;
using System.Text;

namespace Rellax.Interop;

/// <summary>NVRTC result codes (<c>nvrtcResult</c>).</summary>
public enum NvrtcResult
{
    /// <summary>No error.</summary>
    Success = 0,
    /// <summary>Out of host memory.</summary>
    OutOfMemory = 1,
    /// <summary>Program creation failed.</summary>
    ProgramCreationFailure = 2,
    /// <summary>Invalid input.</summary>
    InvalidInput = 3,
    /// <summary>Invalid program handle.</summary>
    InvalidProgram = 4,
    /// <summary>An option was not recognised.</summary>
    InvalidOption = 5,
    /// <summary>The source did not compile (see the log).</summary>
    Compilation = 6,
    /// <summary>A builtin operation failed (often: libnvrtc-builtins not found).</summary>
    BuiltinOperationFailure = 7,
    /// <summary>No name expressions after compilation.</summary>
    NoNameExpressionsAfterCompilation = 8,
    /// <summary>No lowered names before compilation.</summary>
    NoLoweredNamesBeforeCompilation = 9,
    /// <summary>Name expression not valid.</summary>
    NameExpressionNotValid = 10,
    /// <summary>Internal error.</summary>
    InternalError = 11,
}

/// <summary>Raw NVRTC entry points. Prefer the checked wrappers in <see cref="Nvrtc"/>.</summary>
internal static unsafe partial class NvrtcNative
{
    static NvrtcNative() => NativeLibraryResolver.EnsureRegistered();

    private const string Lib = NativeLibraryResolver.NvrtcLibraryName;

    /// <summary><c>nvrtcVersion</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcVersion")]
    public static partial NvrtcResult nvrtcVersion(out int major, out int minor);

    /// <summary><c>nvrtcGetNumSupportedArchs</c> (NVRTC 11.2+).</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetNumSupportedArchs")]
    public static partial NvrtcResult nvrtcGetNumSupportedArchs(out int count);

    /// <summary><c>nvrtcGetSupportedArchs</c> (NVRTC 11.2+): e.g. 35, 37, 50, ..., 90.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetSupportedArchs")]
    public static partial NvrtcResult nvrtcGetSupportedArchs(int* archs);

    /// <summary><c>nvrtcCreateProgram</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcCreateProgram")]
    public static partial NvrtcResult nvrtcCreateProgram(out IntPtr program, byte* source, byte* name, int numHeaders, byte** headers, byte** includeNames);

    /// <summary><c>nvrtcDestroyProgram</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcDestroyProgram")]
    public static partial NvrtcResult nvrtcDestroyProgram(ref IntPtr program);

    /// <summary><c>nvrtcCompileProgram</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcCompileProgram")]
    public static partial NvrtcResult nvrtcCompileProgram(IntPtr program, int numOptions, byte** options);

    /// <summary><c>nvrtcGetProgramLogSize</c> (includes the NUL).</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetProgramLogSize")]
    public static partial NvrtcResult nvrtcGetProgramLogSize(IntPtr program, out nuint size);

    /// <summary><c>nvrtcGetProgramLog</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetProgramLog")]
    public static partial NvrtcResult nvrtcGetProgramLog(IntPtr program, byte* log);

    /// <summary><c>nvrtcGetPTXSize</c> (includes the NUL).</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetPTXSize")]
    public static partial NvrtcResult nvrtcGetPTXSize(IntPtr program, out nuint size);

    /// <summary><c>nvrtcGetPTX</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetPTX")]
    public static partial NvrtcResult nvrtcGetPTX(IntPtr program, byte* ptx);

    /// <summary><c>nvrtcGetCUBINSize</c> (NVRTC 11.1+; only after compiling for a real <c>sm_XY</c>).</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetCUBINSize")]
    public static partial NvrtcResult nvrtcGetCUBINSize(IntPtr program, out nuint size);

    /// <summary><c>nvrtcGetCUBIN</c>.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetCUBIN")]
    public static partial NvrtcResult nvrtcGetCUBIN(IntPtr program, byte* cubin);

    /// <summary><c>nvrtcGetErrorString</c>: a static NUL-terminated string.</summary>
    [LibraryImport(Lib, EntryPoint = "nvrtcGetErrorString")]
    public static partial IntPtr nvrtcGetErrorString(NvrtcResult result);
}

/// <summary>
/// Checked NVRTC wrappers: every failure becomes an <see cref="NvrtcException"/> naming the call and the source.
/// NVRTC is located by <see cref="NativeLibraryResolver"/> (<c>RELLAX_NVRTC_PATH</c>, then common sonames).
/// </summary>
public static unsafe class Nvrtc
{
    /// <summary>
    /// Loads NVRTC and reads its version. Never throws: when NVRTC cannot be loaded, returns <see langword="false"/>
    /// with a reason that says where it looked.
    /// </summary>
    /// <param name="version">NVRTC's version, e.g. (11, 8).</param>
    /// <param name="reason">Empty on success, else why NVRTC is unusable.</param>
    public static bool TryGetVersion(out (int Major, int Minor) version, out string reason)
    {
        version = default;
        try
        {
            var r = NvrtcNative.nvrtcVersion(out var major, out var minor);
            if (r != NvrtcResult.Success)
            {
                reason = $"nvrtcVersion failed: {r}";
                return false;
            }

            version = (major, minor);
            reason = string.Empty;
            return true;
        }
        catch (DllNotFoundException)
        {
            reason = "NVRTC (libnvrtc.so) not found; searched " + NativeLibraryResolver.DescribeNvrtcSearch();
            return false;
        }
        catch (EntryPointNotFoundException e)
        {
            reason = $"NVRTC ({NativeLibraryResolver.LoadedNvrtc}) lacks an entry point: {e.Message}";
            return false;
        }
        catch (BadImageFormatException e)
        {
            reason = $"NVRTC could not be loaded: {e.Message}";
            return false;
        }
    }

    /// <summary>NVRTC's version; throws <see cref="DllNotFoundException"/> with the search description if absent.</summary>
    public static (int Major, int Minor) Version
    {
        get
        {
            if (!TryGetVersion(out var v, out var reason))
            {
                throw new DllNotFoundException(reason);
            }

            return v;
        }
    }

    /// <summary>The architectures (e.g. 52 ... 90) this NVRTC can target.</summary>
    public static int[] GetSupportedArchitectures()
    {
        Check(NvrtcNative.nvrtcGetNumSupportedArchs(out var n), "nvrtcGetNumSupportedArchs");
        var archs = new int[n];
        fixed (int* a = archs)
        {
            Check(NvrtcNative.nvrtcGetSupportedArchs(a), "nvrtcGetSupportedArchs");
        }

        return archs;
    }

    /// <summary>NVRTC's description of a result code.</summary>
    /// <param name="result">The result.</param>
    public static string DescribeError(NvrtcResult result)
    {
        try
        {
            var s = NvrtcNative.nvrtcGetErrorString(result);
            if (s != IntPtr.Zero)
            {
                return Marshal.PtrToStringUTF8(s) ?? result.ToString();
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
        }

        return result == NvrtcResult.Success ? "NVRTC_SUCCESS" : "NVRTC_ERROR_" + result.ToString().ToUpperInvariant();
    }

    /// <summary>Throws <see cref="NvrtcException"/> unless <paramref name="result"/> is success.</summary>
    /// <param name="result">The result.</param>
    /// <param name="call">The call (and source name) for the message.</param>
    public static void Check(NvrtcResult result, string call)
    {
        if (result != NvrtcResult.Success)
        {
            throw new NvrtcException(call, result);
        }
    }

    /// <summary>Creates a program from source plus in-memory headers (matched by <c>#include "name"</c>).</summary>
    /// <param name="source">CUDA C++ source.</param>
    /// <param name="name">Source name used in diagnostics (e.g. <c>rmsnorm.cu</c>).</param>
    /// <param name="headers">Header include names and contents.</param>
    public static NvrtcProgramHandle CreateProgram(string source, string name, IReadOnlyList<KeyValuePair<string, string>> headers)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(headers);
        var strings = new List<IntPtr>();
        try
        {
            var src = Utf8(source, strings);
            var nm = Utf8(name, strings);
            var contents = stackalloc byte*[Math.Max(1, headers.Count)];
            var names = stackalloc byte*[Math.Max(1, headers.Count)];
            for (var i = 0; i < headers.Count; i++)
            {
                names[i] = Utf8(headers[i].Key, strings);
                contents[i] = Utf8(headers[i].Value, strings);
            }

            Check(NvrtcNative.nvrtcCreateProgram(out var program, src, nm, headers.Count, contents, names), $"nvrtcCreateProgram({name})");
            return new NvrtcProgramHandle(program);
        }
        finally
        {
            foreach (var p in strings)
            {
                Marshal.FreeCoTaskMem(p);
            }
        }
    }

    /// <summary>Compiles a program; returns the result code and the log (never throws for compile errors).</summary>
    /// <param name="program">The program.</param>
    /// <param name="options">NVRTC options, e.g. <c>--gpu-architecture=sm_90</c>, <c>-std=c++17</c>.</param>
    public static (NvrtcResult Result, string Log) Compile(NvrtcProgramHandle program, IReadOnlyList<string> options)
    {
        ArgumentNullException.ThrowIfNull(program);
        ArgumentNullException.ThrowIfNull(options);
        var strings = new List<IntPtr>();
        try
        {
            var opts = stackalloc byte*[Math.Max(1, options.Count)];
            for (var i = 0; i < options.Count; i++)
            {
                opts[i] = Utf8(options[i], strings);
            }

            var added = false;
            program.DangerousAddRef(ref added);
            try
            {
                var result = NvrtcNative.nvrtcCompileProgram(program.DangerousGetHandle(), options.Count, opts);
                return (result, GetLog(program));
            }
            finally
            {
                if (added)
                {
                    program.DangerousRelease();
                }
            }
        }
        finally
        {
            foreach (var p in strings)
            {
                Marshal.FreeCoTaskMem(p);
            }
        }
    }

    /// <summary>The program's compile log (empty if none).</summary>
    /// <param name="program">The program.</param>
    public static string GetLog(NvrtcProgramHandle program)
    {
        var bytes = GetBytes(program, "nvrtcGetProgramLog", &NvrtcNative.nvrtcGetProgramLogSize, &NvrtcNative.nvrtcGetProgramLog);
        return Encoding.UTF8.GetString(bytes).TrimEnd('\0');
    }

    /// <summary>The compiled PTX as text bytes (without the trailing NUL).</summary>
    /// <param name="program">A successfully compiled program.</param>
    public static byte[] GetPtx(NvrtcProgramHandle program)
    {
        var bytes = GetBytes(program, "nvrtcGetPTX", &NvrtcNative.nvrtcGetPTXSize, &NvrtcNative.nvrtcGetPTX);
        var end = bytes.Length;
        while (end > 0 && bytes[end - 1] == 0)
        {
            end--;
        }

        return end == bytes.Length ? bytes : bytes[..end];
    }

    /// <summary>The compiled cubin (only for programs compiled for a real <c>sm_XY</c>).</summary>
    /// <param name="program">A successfully compiled program.</param>
    public static byte[] GetCubin(NvrtcProgramHandle program) =>
        GetBytes(program, "nvrtcGetCUBIN", &NvrtcNative.nvrtcGetCUBINSize, &NvrtcNative.nvrtcGetCUBIN);

    private static byte[] GetBytes(NvrtcProgramHandle program, string call,
        delegate*<IntPtr, out nuint, NvrtcResult> getSize, delegate*<IntPtr, byte*, NvrtcResult> get)
    {
        ArgumentNullException.ThrowIfNull(program);
        var added = false;
        program.DangerousAddRef(ref added); // keeps the program alive (and not destroyed) during the native calls
        try
        {
            var p = program.DangerousGetHandle();
            Check(getSize(p, out var size), call + "Size");
            var bytes = new byte[(int)size];
            if (size == 0)
            {
                return bytes;
            }

            fixed (byte* b = bytes)
            {
                Check(get(p, b), call);
            }

            return bytes;
        }
        finally
        {
            if (added)
            {
                program.DangerousRelease();
            }
        }
    }

    private static byte* Utf8(string s, List<IntPtr> owned)
    {
        var p = Marshal.StringToCoTaskMemUTF8(s);
        owned.Add(p);
        return (byte*)p;
    }
}
