using System.Text.RegularExpressions;
using NUnit.Framework;

namespace Rellax.Tests.Cli;

/// <summary>
/// The README's synopsis (the block under "The command line") says what <c>rellax COMMAND --help</c> says, for every
/// command: the same options, each required or optional alike, with the same value placeholder; and every command of the
/// tree has a synopsis. Both sides are parsed from text: the README file and the real process's help output.
/// </summary>
[TestFixture]
public sealed partial class ReadmeSynopsisTests
{
    /// <summary>One option as a synopsis shows it.</summary>
    private readonly record struct Entry(string Name, string? Value, bool Required)
    {
        public override string ToString() => Required ? $"{Name} {Value}".Trim() : $"[{Name} {Value}]".Replace(" ]", "]");
    }

    private static string Readme()
    {
        for (var dir = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); dir is not null; dir = dir.Parent)
        {
            string path = Path.Combine(dir.FullName, "README.md");
            if (File.Exists(path) && File.ReadAllText(path).Contains("## The command line", StringComparison.Ordinal)) return path;
        }
        Assert.Fail("README.md with a '## The command line' section not found above the test directory");
        return null!;
    }

    /// <summary>The synopsis of each command in the README's fenced block under "## The command line".</summary>
    private static Dictionary<string, List<Entry>> ReadmeSynopses()
    {
        string text = File.ReadAllText(Readme());
        int section = text.IndexOf("## The command line", StringComparison.Ordinal);
        int start = text.IndexOf("```\n", section, StringComparison.Ordinal) + 4;
        int end = text.IndexOf("```", start, StringComparison.Ordinal);
        var result = new Dictionary<string, List<Entry>>();
        List<Entry>? current = null;
        foreach (string line in text[start..end].Split('\n'))
        {
            string body = line;
            var head = Regex.Match(line, @"^rellax ([a-z]+(?: [a-z]+)*)");
            if (head.Success)
            {
                Assert.That(result.ContainsKey(head.Groups[1].Value), Is.False, $"two synopses for {head.Groups[1].Value}");
                result[head.Groups[1].Value] = current = [];
                body = line[head.Length..];
            }
            else if (line.Trim().Length > 0)
            {
                Assert.That(current, Is.Not.Null, $"a README synopsis line before any command: {line}");
                Assert.That(line, Does.StartWith(" "), $"a continuation line is indented: {line}");
            }
            if (current is null) continue;
            foreach (Match m in SynopsisOption().Matches(body))
                current.Add(new Entry(m.Groups[2].Value, m.Groups[3].Success ? m.Groups[3].Value : null, !m.Groups[1].Success));
        }
        return result;
    }

    /// <summary>The options of <c>rellax COMMAND --help</c>: name (the longest spelling), placeholder, required.</summary>
    private static List<Entry> HelpEntries(string command, out List<string> allSpellings)
    {
        var (code, stdout, stderr) = RellaxCommandTests.Run([.. command.Split(' '), "--help"]);
        Assert.That(code, Is.EqualTo(0), stderr);
        int options = stdout.IndexOf("\nOptions:\n", StringComparison.Ordinal);
        Assert.That(options, Is.GreaterThan(0), stdout);
        var entries = new List<Entry>();
        allSpellings = [];
        foreach (string line in stdout[(options + 10)..].Split('\n'))
        {
            var m = HelpOption().Match(line);
            if (!m.Success) continue;
            var names = m.Groups[1].Value.Split(", ").Select(n => n.Trim()).ToList();
            if (names.Contains("--help")) continue;
            allSpellings.AddRange(names);
            entries.Add(new Entry(names[0], m.Groups[2].Success ? m.Groups[2].Value : null, m.Groups[3].Success));
        }
        return entries;
    }

    public static IEnumerable<string> Commands() => OptionValueTests.Commands();

    [TestCaseSource(nameof(Commands))]
    public void TheReadmeSynopsisMatchesHelp(string command)
    {
        var readme = ReadmeSynopses();
        Assert.That(readme.Keys, Does.Contain(command), "every command has a README synopsis");
        var help = HelpEntries(command, out var spellings);
        var shown = readme[command];
        foreach (var e in shown)
            Assert.That(spellings, Does.Contain(e.Name), $"README: rellax {command} {e}: no such option in --help");
        // Each help option appears once in the README under one of its spellings, with the same placeholder and requiredness.
        foreach (var h in help)
        {
            var match = shown.Where(e => HelpSpellings(command, h).Contains(e.Name)).ToList();
            Assert.That(match, Has.Count.EqualTo(1), $"rellax {command}: {h} is in --help; the README shows it {match.Count} times");
            Assert.That(match[0].Required, Is.EqualTo(h.Required), $"rellax {command} {h.Name}: required in one and optional in the other");
            Assert.That(match[0].Value, Is.EqualTo(h.Value), $"rellax {command} {h.Name}: placeholder differs");
        }
        Assert.That(shown, Has.Count.EqualTo(help.Count), $"rellax {command}: README lists {string.Join(" ", shown)}");
    }

    /// <summary>The spellings of help option <paramref name="h"/> (its own line's names).</summary>
    private static HashSet<string> HelpSpellings(string command, Entry h)
    {
        var option = OptionValueTests.Find(command).Options.Single(o => o.Name == h.Name || o.Aliases.Contains(h.Name));
        return [option.Name, .. option.Aliases];
    }

    [GeneratedRegex(@"(\[)?(--[a-z0-9-]+)(?: ([^\s\[\]]+))?\]?")]
    private static partial Regex SynopsisOption();

    [GeneratedRegex(@"^  (-[^<(]*?)\s*(?:<([^>]*)>)?\s*(\(REQUIRED\))?(?:\s{2,}|$)")]
    private static partial Regex HelpOption();
}
