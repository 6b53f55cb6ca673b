namespace Rellax.Runtime;

/// <summary>An exception's message as a user should read it.</summary>
internal static class ExceptionText
{
    /// <summary>
    /// The message on one line, without the <c>(Parameter 'x')</c> suffix .NET adds to argument errors (it names a C#
    /// parameter the user never saw) nor the <c>Actual value was ...</c> line of an <see cref="ArgumentOutOfRangeException"/>.
    /// Both are removed by what the exception says they are (<see cref="ArgumentException.ParamName"/>,
    /// <see cref="ArgumentOutOfRangeException.ActualValue"/>), not by searching the text.
    /// </summary>
    public static string OneLine(Exception e)
    {
        ArgumentNullException.ThrowIfNull(e);
        string message = e.Message;
        if (e is ArgumentOutOfRangeException { ActualValue: { } actual })
        {
            string line = Environment.NewLine + $"Actual value was {actual}.";
            if (message.EndsWith(line, StringComparison.Ordinal)) message = message[..^line.Length];
        }
        if (e is ArgumentException { ParamName: { } name })
        {
            string suffix = $" (Parameter '{name}')";
            if (message.EndsWith(suffix, StringComparison.Ordinal)) message = message[..^suffix.Length];
        }
        return message.ReplaceLineEndings(" ");
    }
}
