using System.CommandLine;
using NUnit.Framework;
using Rellax.Cli;

namespace Rellax.Tests.Cli;

/// <summary>
/// Every integer option of every command, fed bad values (non-numeric, fractional, empty, hexadecimal, overflowing, just
/// outside its range): one line on stderr naming the option and the value, exit code 1, no stack trace, and the command
/// never runs. The options are found by walking the real command tree, so a new command or option is covered as soon as
/// it exists, and an integer option that bypasses <see cref="CommonOptions.Int"/> fails the test.
/// </summary>
[TestFixture, NonParallelizable] // swaps Console.Error
public sealed class OptionValueTests
{
    /// <summary>Every command that runs (leaves of the tree), as the words that name it: <c>score</c>, <c>crm train</c>.</summary>
    public static IEnumerable<string> Commands() => Leaves(RellaxCli.CreateRoot(), "");

    private static IEnumerable<string> Leaves(Command command, string prefix)
    {
        foreach (var sub in command.Subcommands)
        {
            string path = (prefix + " " + sub.Name).Trim();
            if (sub.Subcommands.Count == 0) yield return path;
            else foreach (string leaf in Leaves(sub, path)) yield return leaf;
        }
    }

    /// <summary>The command named by <paramref name="path"/> (words separated by spaces).</summary>
    public static Command Find(string path)
    {
        Command command = RellaxCli.CreateRoot();
        foreach (string word in path.Split(' ')) command = command.Subcommands.Single(c => c.Name == word);
        return command;
    }

    /// <summary>Parses <paramref name="args"/> as <c>rellax</c> does and reports errors, without running anything.</summary>
    private static (int? Code, string Err) Parse(params string[] args)
    {
        var root = RellaxCli.CreateRoot();
        var saved = Console.Error;
        var err = new StringWriter();
        Console.SetError(err);
        try
        {
            return (ParseErrors.Report(root, root.Parse(args), args), err.ToString());
        }
        finally
        {
            Console.SetError(saved);
        }
    }

    /// <summary>Values for every required option other than <paramref name="except"/>, so that the bad value is the only error.</summary>
    private static List<string> RequiredOthers(string path, Command command, Option except)
    {
        var args = new List<string>(path.Split(' '));
        foreach (var o in command.Options.Where(o => o.Required && o != except))
        {
            args.Add(o.Name);
            args.Add(CommonOptions.Bounds.TryGetValue(o, out var b) ? b.Min.ToString(System.Globalization.CultureInfo.InvariantCulture) : "x");
        }
        return args;
    }

    [TestCaseSource(nameof(Commands))]
    public void EveryIntegerOptionRejectsBadValuesInOneLine(string name)
    {
        var command = Find(name);
        int checkedOptions = 0;
        foreach (var option in command.Options)
        {
            Assert.That(option.ValueType, Is.AnyOf(typeof(string), typeof(bool), typeof(int), typeof(int?), typeof(double)),
                $"{name} {option.Name}: a {option.ValueType.Name} option needs a checked parser like CommonOptions.Int");
            if (option.ValueType == typeof(double))
            {
                Assert.That(CommonOptions.NumberBounds.TryGetValue(option, out _), Is.True, $"{name} {option.Name} is not made by CommonOptions.Number");
                continue;
            }
            if (option.ValueType != typeof(int) && option.ValueType != typeof(int?)) continue;
            Assert.That(CommonOptions.Bounds.TryGetValue(option, out var bounds), Is.True, $"{name} {option.Name} is not made by CommonOptions.Int/OptionalInt");
            var bad = new List<string> { "abc", "2.5", "", " ", "1e3", "0x10", "99999999999", "-99999999999", "3abc" };
            if (bounds!.Min > int.MinValue) bad.Add((bounds.Min - 1L).ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (bounds.Max < int.MaxValue) bad.Add((bounds.Max + 1L).ToString(System.Globalization.CultureInfo.InvariantCulture));
            foreach (string value in bad)
            {
                var args = RequiredOthers(name, command, option);
                args.Add(option.Name);
                args.Add(value);
                var (code, err) = Parse([.. args]);
                string shown = $"rellax {string.Join(' ', args)}";
                Assert.That(code, Is.EqualTo(1), $"{shown}: accepted");
                string[] lines = err.TrimEnd().Split('\n');
                Assert.That(lines, Has.Length.EqualTo(1), $"{shown}: {err}");
                Assert.That(lines[0], Does.StartWith($"rellax {name}: {option.Name}"), shown);
                Assert.That(lines[0], value.Trim().Length == 0 ? Does.Contain("empty").Or.Contain("not an integer") : Does.Contain(value), shown);
                Assert.That(err, Does.Not.Contain("Exception").And.Not.Contain("   at "), shown);
            }
            // The bounds themselves are accepted.
            foreach (int ok in new[] { bounds.Min, bounds.Max })
            {
                var args = RequiredOthers(name, command, option);
                args.Add(option.Name);
                args.Add(ok.ToString(System.Globalization.CultureInfo.InvariantCulture));
                var (code, err) = Parse([.. args]);
                Assert.That(code, Is.Null, $"rellax {string.Join(' ', args)}: {err}");
            }
            checkedOptions++;
        }
        TestContext.Out.WriteLine($"{name}: {checkedOptions} integer options checked");
        if (name != "backends") Assert.That(checkedOptions, Is.GreaterThan(0), $"{name} has at least --threads");
    }

    [TestCaseSource(nameof(Commands))]
    public void EveryRealOptionRejectsBadValuesInOneLine(string name)
    {
        var command = Find(name);
        foreach (var option in command.Options.Where(o => o.ValueType == typeof(double)))
        {
            Assert.That(CommonOptions.NumberBounds.TryGetValue(option, out var bounds), Is.True, $"{name} {option.Name} is not made by CommonOptions.Number");
            var bad = new List<string> { "abc", "", " ", "NaN", "Infinity", "-Infinity", "1e999", "0x10", "3abc" };
            bad.Add(bounds!.MinExclusive ? bounds.Min.ToString("R", System.Globalization.CultureInfo.InvariantCulture) : (bounds.Min - 1).ToString("R", System.Globalization.CultureInfo.InvariantCulture));
            if (double.IsFinite(bounds.Max)) bad.Add((bounds.Max + 1).ToString("R", System.Globalization.CultureInfo.InvariantCulture));
            foreach (string value in bad)
            {
                var args = RequiredOthers(name, command, option);
                args.AddRange([option.Name, value]);
                var (code, err) = Parse([.. args]);
                string shown = $"rellax {string.Join(' ', args)}";
                Assert.That(code, Is.EqualTo(1), $"{shown}: accepted");
                string[] lines = err.TrimEnd().Split('\n');
                Assert.That(lines, Has.Length.EqualTo(1), $"{shown}: {err}");
                Assert.That(lines[0], Does.StartWith($"rellax {name}: {option.Name}"), shown);
                Assert.That(lines[0], value.Trim().Length == 0 ? Does.Contain("empty") : Does.Contain(value), shown);
                Assert.That(err, Does.Not.Contain("Exception").And.Not.Contain("   at "), shown);
            }
            // Values inside the range are accepted.
            double inside = bounds.MinExclusive ? bounds.Min + Math.Min(1e-3, (bounds.Max - bounds.Min) / 2) : bounds.Min;
            foreach (double ok in double.IsFinite(bounds.Max) ? new[] { inside, bounds.Max } : [inside])
            {
                var args = RequiredOthers(name, command, option);
                args.AddRange([option.Name, ok.ToString("R", System.Globalization.CultureInfo.InvariantCulture)]);
                var (code, err) = Parse([.. args]);
                Assert.That(code, Is.Null, $"rellax {string.Join(' ', args)}: {err}");
            }
        }
    }

    [TestCaseSource(nameof(Commands))]
    public void EveryChoiceOptionNamesItselfAndTheChoices(string name)
    {
        var command = Find(name);
        foreach (var option in command.Options.Where(o => o.ValueType == typeof(string) && o.HelpName is { } h && h.Contains('|')))
        {
            if (option.Name is "--dataset") continue; // checked by the command itself, with its own message (PrepareCommandTests)
            var args = RequiredOthers(name, command, option);
            args.AddRange([option.Name, "nonsense"]);
            var (code, err) = Parse([.. args]);
            Assert.That(code, Is.EqualTo(1), string.Join(' ', args));
            Assert.That(err.TrimEnd().Split('\n'), Has.Length.EqualTo(1), err);
            Assert.That(err, Does.Contain(option.Name).And.Contain("'nonsense'").And.Contain(option.HelpName!.Split('|')[0]), err);
        }
    }

    [Test]
    public void AMistypedCommandGetsTheNearestCommandAndAShortUsage()
    {
        var (code, err) = Parse("retreive", "--k", "3");
        Assert.That(code, Is.EqualTo(1));
        var lines = err.TrimEnd().Split('\n');
        Assert.That(lines, Has.Length.EqualTo(2), "the error and a one-line usage, not the whole help");
        Assert.That(lines[0], Is.EqualTo("rellax: unknown command 'retreive'; did you mean 'retrieve'?"));
        Assert.That(lines[1], Does.StartWith("usage: rellax <generate|").And.Contain("|demo>"));
        (code, err) = Parse("xyzzy");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.StartWith("rellax: unknown command 'xyzzy'\n"), "nothing near: no suggestion");
        (code, err) = Parse("retrieve", "--index", "x", "--k", "3", "--ordr", "score");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("'--ordr'").And.Contain("Did you mean '--order'?"));
        Assert.That(err.TrimEnd().Split('\n'), Has.Length.EqualTo(1));
        (code, _) = Parse();
        Assert.That(code, Is.EqualTo(1));
        (code, _) = Parse("embed", "--help");
        Assert.That(code, Is.Null, "--help runs even without the required options");
    }

    [Test]
    public void EditDistanceIsOptimalStringAlignment()
    {
        Assert.That(ParseErrors.EditDistance("embd", "embed"), Is.EqualTo(1));
        Assert.That(ParseErrors.EditDistance("retreive", "retrieve"), Is.EqualTo(1), "a transposition is one edit");
        Assert.That(ParseErrors.EditDistance("", "abc"), Is.EqualTo(3));
        Assert.That(ParseErrors.EditDistance("score", "score"), Is.EqualTo(0));
        Assert.That(ParseErrors.Nearest("scroe", ["score", "eval"]), Is.EqualTo("score"));
        Assert.That(ParseErrors.Nearest("banana", ["score", "eval"]), Is.Null);
    }

    /// <summary>The real process, once per command: the exit code is 1 (not 134) and stderr is one line.</summary>
    [TestCaseSource(nameof(Commands))]
    public void TheRealProcessExitsWith1OnABadValue(string name)
    {
        var command = Find(name);
        var option = command.Options.FirstOrDefault(o => o.ValueType == typeof(int) || o.ValueType == typeof(int?));
        if (option is null) Assert.Ignore($"{name} has no integer option");
        var args = RequiredOthers(name, command, option);
        args.AddRange([option.Name, "1.5"]);
        var (code, stdout, stderr) = RellaxCommandTests.Run([.. args]);
        Assert.That(code, Is.EqualTo(1), stderr);
        Assert.That(stdout, Is.Empty);
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
        Assert.That(stderr, Does.Contain(option.Name).And.Contain("'1.5' is not an integer"));
    }
}
