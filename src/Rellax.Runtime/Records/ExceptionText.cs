namespace Rellax.Runtime;

/// <summary>
/// An exception's message as a user should read it. The library's errors name the argument, file or record in their
/// message; a service that shows them to its users (an HTTP 400 body, a log line) should pass them through
/// <see cref="OneLine"/>, which drops what .NET adds for the C# caller.
/// </summary>
public static class ExceptionText
{
    /// <summary>
    /// The message on one line, without the <c>(Parameter 'x')</c> suffix .NET adds to argument errors (it names a C#
    /// parameter the user never saw) nor the <c>Actual value was ...</c> line of an <see cref="ArgumentOutOfRangeException"/>.
    /// Both are removed by what the exception says they are (<see cref="ArgumentException.ParamName"/>,
    /// <see cref="ArgumentOutOfRangeException.ActualValue"/>), not by searching the text.
    /// </summary>
    /// <param name="e">Any exception.</param>
    /// <returns>Its message on one line (line breaks become spaces).</returns>
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
