using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;

namespace Rellax.Cli;

/// <summary>
/// How a command line that does not parse is reported: one line on stderr naming the option and the value (an unknown
/// command gets a short usage and the nearest command; an unknown option the nearest option), exit code 1, never the
/// whole help and never a stack trace.
/// </summary>
internal static class ParseErrors
{
    /// <summary>Prints the errors of <paramref name="result"/> and returns 1, or returns null when it may run (no errors, or
    /// --help, which clears them).</summary>
    public static int? Report(RootCommand root, ParseResult result, IReadOnlyList<string> args)
    {
        if (result.Errors.Count == 0 || result.Action is CommandLineAction { ClearsParseErrors: true }) return null;
        var command = result.CommandResult.Command;
        if (command == root)
        {
            string? first = args.FirstOrDefault(a => !a.StartsWith('-'));
            var names = root.Subcommands.Select(c => c.Name).ToList();
            if (first is not null && !names.Contains(first))
            {
                string? near = Nearest(first, names);
                Console.Error.WriteLine($"rellax: unknown command '{first}'" + (near is null ? "" : $"; did you mean '{near}'?"));
            }
            else if (first is not null || args.Count > 0) Console.Error.WriteLine($"rellax: {Flatten(result.Errors[0].Message)}");
            Console.Error.WriteLine($"usage: rellax <{string.Join("|", names)}> [options]   (rellax --help lists them; rellax COMMAND --help)");
            return 1;
        }
        var error = result.Errors[0];
        string message = Flatten(error.Message);
        if (OptionOf(error.SymbolResult) is { } option && !message.Contains(option.Name, StringComparison.Ordinal))
            message = $"{option.Name}: {message}";
        if (result.UnmatchedTokens.FirstOrDefault() is { } unmatched && message.Contains($"'{unmatched}'", StringComparison.Ordinal))
        {
            var options = command.Options.SelectMany(o => o.Aliases.Prepend(o.Name)).Where(n => n.StartsWith("--", StringComparison.Ordinal)).ToList();
            if (unmatched.StartsWith('-') && Nearest(unmatched, options) is { } near) message += $" Did you mean '{near}'?";
        }
        string more = result.Errors.Count > 1 ? $" (and {result.Errors.Count - 1} more)" : "";
        // The command as the user typed it: every word from the root (`crm train`, not `train`).
        var words = new List<string>();
        for (var at = result.CommandResult; at is not null && at.Command != root; at = at.Parent as System.CommandLine.Parsing.CommandResult)
            words.Insert(0, at.Command.Name);
        string name = string.Join(' ', words);
        Console.Error.WriteLine($"rellax {name}: {message}{more}   (rellax {name} --help)");
        return 1;
    }

    private static Option? OptionOf(SymbolResult? symbol) => symbol switch
    {
        OptionResult o => o.Option,
        ArgumentResult { Parent: OptionResult o } => o.Option,
        _ => null,
    };

    /// <summary>The message on one line: System.CommandLine lists choices on separate, tab-indented lines.</summary>
    private static string Flatten(string message) =>
        string.Join(" ", message.Split(['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    /// <summary>The candidate nearest to <paramref name="word"/> by edit distance, if it is close enough to be a typo (at
    /// most a third of the word's length, and always at least 2 edits).</summary>
    internal static string? Nearest(string word, IEnumerable<string> candidates)
    {
        string? best = null;
        int bestDistance = int.MaxValue;
        foreach (string c in candidates)
        {
            int d = EditDistance(word.ToLowerInvariant(), c.ToLowerInvariant());
            if (d < bestDistance) (best, bestDistance) = (c, d);
        }
        return bestDistance <= Math.Max(2, word.Length / 3) ? best : null;
    }

    /// <summary>Levenshtein distance with adjacent transpositions (optimal string alignment), O(|a|·|b|).</summary>
    internal static int EditDistance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        return d[a.Length, b.Length];
    }
}
