using Rellax.Rec;

namespace Rellax.Cli;

/// <summary>Draws the pipeline's stage progress (<see cref="EvaluationProgress"/>) as one <see cref="TerminalProgress"/> per stage.</summary>
internal sealed class StageProgress : IProgress<EvaluationProgress>, IDisposable
{
    private TerminalProgress? _current;
    private string? _stage;

    /// <inheritdoc/>
    public void Report(EvaluationProgress value)
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
