using Rellax.Runtime;

namespace Rellax.Cli;

/// <summary>Draws the pipeline's stage progress (<see cref="WorkProgress"/>) as one <see cref="TerminalProgress"/> per stage.</summary>
internal sealed class StageProgress : IProgress<WorkProgress>, IDisposable
{
    private TerminalProgress? _current;
    private string? _stage;

    /// <inheritdoc/>
    public void Report(WorkProgress value)
    {
        if (value.Stage != _stage)
        {
            _current?.Dispose();
            _stage = value.Stage;
            _current = new TerminalProgress(value.Stage, value.Total);
        }
        _current!.Report(value.Done);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _current?.Dispose();
        _current = null;
    }
}
