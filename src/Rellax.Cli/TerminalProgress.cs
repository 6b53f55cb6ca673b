using System.Diagnostics;

namespace Rellax.Cli;

/// <summary>
/// Progress of a long command on stderr. On a terminal: one bar redrawn in place (<c>\r</c>) at most 10 times a second,
/// <c>scoring [###########-------------]  450/1000  45%  37.2/s  eta 15s</c>, cleared when done. Not on a terminal (a log
/// file, a pipe, tests): a plain line every 30 seconds at most (<c>scoring: 450/1000</c>), so logs stay clean.
/// Reports are synchronous (unlike <see cref="Progress{T}"/>), from whichever thread calls <see cref="Report"/>.
/// </summary>
internal sealed class TerminalProgress : IProgress<int>, IProgress<Rellax.Runtime.WorkProgress>, IDisposable
{
    private const int BarWidth = 24;
    private readonly TextWriter _out;
    private readonly bool _interactive;
    private readonly string _label;
    private readonly int _total;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly TimeSpan _every;
    private TimeSpan _last = TimeSpan.Zero;
    private int _drawnWidth;

    /// <summary>Progress on the process's stderr, interactive when stderr is a terminal.</summary>
    /// <param name="label">What is being counted, e.g. <c>scoring</c>.</param>
    /// <param name="total">The count at completion (at least 0).</param>
    public TerminalProgress(string label, int total) : this(Console.Error, !Console.IsErrorRedirected, label, total) { }

    /// <summary>Progress on <paramref name="output"/> (tests pass a <see cref="StringWriter"/>).</summary>
    /// <param name="output">Where to draw.</param>
    /// <param name="interactive">Draw a bar in place (a terminal) rather than occasional log lines.</param>
    /// <param name="label">What is being counted.</param>
    /// <param name="total">The count at completion (at least 0).</param>
    public TerminalProgress(TextWriter output, bool interactive, string label, int total)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(total);
        _out = output;
        _interactive = interactive;
        _label = label;
        _total = total;
        _every = interactive ? TimeSpan.FromMilliseconds(100) : TimeSpan.FromSeconds(30);
        if (interactive) Draw(0);
    }

    /// <summary>Records a library call's <see cref="Rellax.Runtime.WorkProgress"/>: its <c>Done</c> (the bar keeps its own total).</summary>
    public void Report(Rellax.Runtime.WorkProgress value) => Report(value.Done);

    /// <summary>Records that <paramref name="done"/> of the total are finished; redraws when enough time has passed.</summary>
    public void Report(int done)
    {
        var now = _clock.Elapsed;
        if (_interactive)
        {
            if (done < _total && now - _last < _every) return;
            _last = now;
            Draw(done);
        }
        else
        {
            // A log gets a line per interval and none at the end (the command's summary says it): short runs print nothing.
            if (done >= _total || now - _last < _every) return;
            _last = now;
            _out.WriteLine($"{_label}: {done}/{_total}");
        }
    }

    /// <summary>Extra text shown after the rate (for example a running loss); null for none.</summary>
    public string? Status { get; set; }

    /// <summary>The bar's text for <paramref name="done"/> after <paramref name="elapsed"/> (no carriage return).</summary>
    internal string Render(int done, TimeSpan elapsed)
    {
        double fraction = _total == 0 ? 1 : Math.Clamp((double)done / _total, 0, 1);
        int filled = (int)Math.Round(fraction * BarWidth);
        string bar = new string('#', filled) + new string('-', BarWidth - filled);
        string text = $"{_label} [{bar}] {done.ToString().PadLeft(_total.ToString().Length)}/{_total} {fraction * 100,3:F0}%";
        double seconds = elapsed.TotalSeconds;
        if (done > 0 && seconds > 0)
        {
            double rate = done / seconds;
            text += $"  {rate:F1}/s";
            if (done < _total) text += $"  eta {Duration(Math.Ceiling((_total - done) / rate))}";
        }
        if (Status is { } status) text += "  " + status;
        return text;
    }

    /// <summary><c>45s</c>, <c>2m05s</c>, <c>1h02m</c>.</summary>
    private static string Duration(double seconds)
    {
        long s = (long)Math.Min(seconds, 100L * 86400);
        return s < 60 ? $"{s}s" : s < 3600 ? $"{s / 60}m{s % 60:D2}s" : $"{s / 3600}h{s / 60 % 60:D2}m";
    }

    private void Draw(int done)
    {
        string text = Render(done, _clock.Elapsed);
        _out.Write("\r" + text.PadRight(_drawnWidth));
        _drawnWidth = text.Length;
        _out.Flush();
    }

    /// <summary>Clears the bar (on a terminal) so the summary line starts on a clean line.</summary>
    public void Dispose()
    {
        if (_interactive && _drawnWidth > 0)
        {
            _out.Write("\r" + new string(' ', _drawnWidth) + "\r");
            _out.Flush();
            _drawnWidth = 0;
        }
    }
}
