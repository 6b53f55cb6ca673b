using System.Runtime.InteropServices;

namespace Rellax.Cli;

/// <summary>
/// A token cancelled by the first SIGINT (Ctrl+C) or SIGTERM, through <see cref="PosixSignalRegistration"/>: the command
/// then stops between units of work and cleans up (see <see cref="CommonOptions.Guard(Func{CancellationToken, int})"/>).
/// A second signal is not intercepted, so it ends the process as usual. Dispose to unregister.
/// </summary>
internal sealed class SignalCancellation : IDisposable
{
    private readonly CancellationTokenSource _source = new();
    private readonly PosixSignalRegistration[] _registrations;

    public SignalCancellation()
    {
        _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal), PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal)];
    }

    /// <summary>Cancelled on the first SIGINT or SIGTERM.</summary>
    public CancellationToken Token => _source.Token;

    private void OnSignal(PosixSignalContext context)
    {
        if (_source.IsCancellationRequested) return; // the second signal: the default action ends the process
        context.Cancel = true;
        _source.Cancel();
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
        _source.Dispose();
    }
}

/// <summary>
/// Test hooks, off unless the environment variable <c>RELLAX_TEST_HOLD</c> names a point: then the command stops there,
/// prints <c>rellax: test: holding at POINT</c> on stderr and waits (at most a minute) for a signal, so that a test can
/// interrupt it at a known place. Points: <c>output</c> (just before any output file or folder is renamed into place, its
/// temporary file complete) and <c>generate</c> (after the first generated token).
/// </summary>
internal static class TestHooks
{
    private const string Variable = "RELLAX_TEST_HOLD";

    /// <summary>The <see cref="AppContext"/> data slot that <see cref="Runtime.OutputFile"/> calls just before it renames a
    /// temporary file or folder into place (a test seam of the library, not its API).</summary>
    private const string BeforeCommitData = "Rellax.Runtime.OutputFile.BeforeCommit";

    /// <summary>Arms the <c>output</c> point on <see cref="Runtime.OutputFile"/> when asked for.</summary>
    public static void Install(CancellationToken token)
    {
        if (Environment.GetEnvironmentVariable(Variable) == "output")
            AppContext.SetData(BeforeCommitData, (Action<string, CancellationToken>)((path, writeToken) => Wait("output", token)));
    }

    /// <summary>Waits at <paramref name="point"/> when <c>RELLAX_TEST_HOLD</c> names it; returns at once otherwise.</summary>
    public static void Hold(string point, CancellationToken token)
    {
        if (Environment.GetEnvironmentVariable(Variable) == point) Wait(point, token);
    }

    private static void Wait(string point, CancellationToken token)
    {
        if (token.IsCancellationRequested) return;
        Console.Error.WriteLine($"rellax: test: holding at {point}");
        Console.Error.Flush();
        token.WaitHandle.WaitOne(TimeSpan.FromMinutes(1));
        token.ThrowIfCancellationRequested();
    }
}
