using Rellax.Interop;

namespace Rellax.Kernels.Cuda;

/// <summary>What <see cref="CudaAvailability.Probe"/> found.</summary>
/// <param name="Available">Whether a CUDA device can be used.</param>
/// <param name="Reason">Why not (empty when available).</param>
/// <param name="DeviceName">The device's name, when available.</param>
/// <param name="ComputeCapability">The device's compute capability, when available.</param>
/// <param name="DeviceCount">Number of CUDA devices (0 when the driver is missing).</param>
/// <param name="DriverVersion">The driver API version, when the driver loaded.</param>
public sealed record CudaProbeResult(
    bool Available,
    string Reason,
    string? DeviceName,
    CudaArchitecture? ComputeCapability,
    int DeviceCount,
    (int Major, int Minor)? DriverVersion);

/// <summary>Checks whether the CUDA backend can run here, without ever throwing.</summary>
public static class CudaAvailability
{
    /// <summary>
    /// Loads the driver, initializes it and describes device <paramref name="ordinal"/>. Never throws: every
    /// failure (no libcuda, no device, driver error) becomes <c>Available = false</c> with a reason.
    /// </summary>
    /// <param name="ordinal">The device ordinal to describe.</param>
    public static CudaProbeResult Probe(int ordinal = 0)
    {
        try
        {
            if (!CudaDriver.TryInitialize(out var reason))
            {
                return new CudaProbeResult(false, reason, null, null, 0, null);
            }

            var version = CudaDriver.GetDriverVersion();
            var count = CudaDriver.GetDeviceCount();
            if (count == 0)
            {
                return new CudaProbeResult(false, "CUDA driver present but no CUDA device found", null, null, 0, version);
            }

            if (ordinal < 0 || ordinal >= count)
            {
                return new CudaProbeResult(false, $"CUDA device {ordinal} requested but only {count} present", null, null, count, version);
            }

            var device = CudaDriver.GetDevice(ordinal);
            var (major, minor) = CudaDriver.GetComputeCapability(device);
            return new CudaProbeResult(true, string.Empty, CudaDriver.GetDeviceName(device), new CudaArchitecture(major, minor), count, version);
        }
        catch (Exception e)
        {
            return new CudaProbeResult(false, $"CUDA probe failed: {e.GetType().Name}: {e.Message}", null, null, 0, null);
        }
    }
}
