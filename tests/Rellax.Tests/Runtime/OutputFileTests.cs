using System.Diagnostics;
using System.Text;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>
/// <see cref="OutputFile"/>: an output path never destroys anything. Symbolic links are followed (the link stays, its
/// target is replaced), devices and FIFOs are streamed to and stay what they are, an output that is an input (any
/// spelling, a hard link, a link, a file of an input folder) is refused naming both, and a failed or cancelled write
/// leaves the old content and no temporary file; the folder form likewise.
/// </summary>
[TestFixture, System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class OutputFileTests
{
    private string _dir = null!;

    [SetUp] public void MakeDir() => _dir = Directory.CreateTempSubdirectory("rellax-output-").FullName;

    [TearDown] public void Clean() => Directory.Delete(_dir, recursive: true);

    private static void WriteText(string path, string text, CancellationToken token = default) =>
        OutputFile.Write(path, s => s.Write(Encoding.UTF8.GetBytes(text)), token);

    /// <summary>Every entry of the test folder (hidden ones too), by name.</summary>
    private string[] Entries() => [.. Directory.EnumerateFileSystemEntries(_dir).Select(Path.GetFileName).Order()!];

    [Test]
    public void WritesANewFileAndReplacesAnOldOneKeepingItsPermissions()
    {
        string path = Path.Combine(_dir, "out.txt");
        WriteText(path, "one");
        Assert.That(File.ReadAllText(path), Is.EqualTo("one"));
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
        WriteText(path, "two");
        Assert.That(File.ReadAllText(path), Is.EqualTo("two"));
        Assert.That(File.GetUnixFileMode(path), Is.EqualTo(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead));
        Assert.That(Entries(), Is.EqualTo(new[] { "out.txt" }));
    }

    [Test]
    public void ASymlinkIsFollowedAndStaysALink()
    {
        string target = Path.Combine(_dir, "target.txt");
        File.WriteAllText(target, "old");
        string link = Path.Combine(_dir, "link.txt");
        File.CreateSymbolicLink(link, "target.txt");
        WriteText(link, "new");
        Assert.That(new FileInfo(link).LinkTarget, Is.EqualTo("target.txt"), "the link is still a link");
        Assert.That(File.ReadAllText(target), Is.EqualTo("new"), "its target got the content");
        Assert.That(Entries(), Is.EqualTo(new[] { "link.txt", "target.txt" }));

        // A chain of links, and a dangling link whose target is created.
        string link2 = Path.Combine(_dir, "link2.txt");
        File.CreateSymbolicLink(link2, link);
        WriteText(link2, "newer");
        Assert.That(File.ReadAllText(target), Is.EqualTo("newer"));
        string dangling = Path.Combine(_dir, "dangling.txt");
        File.CreateSymbolicLink(dangling, "later.txt");
        WriteText(dangling, "made");
        Assert.That(new FileInfo(dangling).LinkTarget, Is.EqualTo("later.txt"));
        Assert.That(File.ReadAllText(Path.Combine(_dir, "later.txt")), Is.EqualTo("made"));
    }

    [Test]
    public void DevNullStaysACharacterDevice()
    {
        WriteText("/dev/null", "nothing");
        var info = new FileInfo("/dev/null");
        Assert.That(info.Exists, Is.True);
        Assert.That(RunStat("/dev/null"), Is.EqualTo("character special file"));
    }

    [Test]
    public void AFifoIsStreamedToAndStaysAFifo()
    {
        string fifo = Path.Combine(_dir, "pipe");
        using (var mk = Process.Start("mkfifo", fifo)) mk.WaitForExit();
        Assume.That(RunStat(fifo), Is.EqualTo("fifo"), "mkfifo is needed");
        var reader = Task.Run(() => File.ReadAllText(fifo));
        WriteText(fifo, "through the pipe");
        Assert.That(reader.Wait(TimeSpan.FromSeconds(30)), Is.True);
        Assert.That(reader.Result, Is.EqualTo("through the pipe"));
        Assert.That(RunStat(fifo), Is.EqualTo("fifo"));
        Assert.That(Entries(), Is.EqualTo(new[] { "pipe" }), "no temporary file beside it");
    }

    [Test]
    public void AnOutputThatIsAnInputIsRefusedNamingBoth()
    {
        string input = Path.Combine(_dir, "in.jsonl");
        File.WriteAllText(input, "precious");
        string other = Path.Combine(_dir, "other.jsonl");

        void Refused(string output, string inputGiven)
        {
            var e = Assert.Throws<IOException>(() => OutputFile.Check(output, "--output", other, inputGiven))!;
            Assert.That(e.Message, Does.Contain($"--output '{output}'").And.Contain(inputGiven).And.Contain("refusing"));
        }
        Refused(input, input);
        Refused(Path.Combine(_dir, ".", "in.jsonl"), input);
        string hard = Path.Combine(_dir, "hard.jsonl");
        using (var ln = Process.Start("ln", [input, hard])) ln.WaitForExit();
        Refused(hard, input);
        string soft = Path.Combine(_dir, "soft.jsonl");
        File.CreateSymbolicLink(soft, input);
        Refused(soft, input);
        // A file inside an input folder (a model or prepared-dataset folder).
        Refused(input, _dir);
        Assert.That(File.ReadAllText(input), Is.EqualTo("precious"));

        Assert.DoesNotThrow(() => OutputFile.Check(Path.Combine(_dir, "new.jsonl"), "--output", input, _dir, null));
        Assert.DoesNotThrow(() => OutputFile.Check("/dev/null", "--output", input));
        Assert.That(OutputFile.IsSameFile(input, hard), Is.True);
        Assert.That(OutputFile.IsSameFile(input, other), Is.False, "a missing file is never the same");
    }

    [Test]
    public void AFailedOrCancelledWriteLeavesTheOldFileAndNoTemporary()
    {
        string path = Path.Combine(_dir, "out.txt");
        File.WriteAllText(path, "old");
        Assert.Throws<IOException>(() => OutputFile.Write(path, s =>
        {
            s.Write("half"u8);
            throw new IOException("disk full (simulated)");
        }));
        Assert.That(File.ReadAllText(path), Is.EqualTo("old"));
        Assert.That(Entries(), Is.EqualTo(new[] { "out.txt" }));

        using var cancel = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => OutputFile.Write(path, s =>
        {
            s.Write("half"u8);
            cancel.Cancel();
        }, cancel.Token));
        Assert.That(File.ReadAllText(path), Is.EqualTo("old"));
        Assert.That(Entries(), Is.EqualTo(new[] { "out.txt" }));

        // Through a link, the temporary file sits beside the target and is removed too.
        Directory.CreateDirectory(Path.Combine(_dir, "real"));
        string target = Path.Combine(_dir, "real", "t.txt");
        File.WriteAllText(target, "kept");
        File.CreateSymbolicLink(Path.Combine(_dir, "l.txt"), target);
        Assert.Throws<OperationCanceledException>(() => WriteText(Path.Combine(_dir, "l.txt"), "no", cancel.Token));
        Assert.That(File.ReadAllText(target), Is.EqualTo("kept"));
        Assert.That(Directory.GetFiles(Path.Combine(_dir, "real")), Is.EqualTo(new[] { target }));
    }

    [Test]
    public void AFolderIsAnOutputFolderOnlyAsAllowed()
    {
        Assert.Throws<IOException>(() => WriteText(_dir, "x"), "a folder is not a file");
        string folder = Path.Combine(_dir, "out");
        static string? Refuse(string f) => File.Exists(Path.Combine(f, "mine")) || !Directory.EnumerateFileSystemEntries(f).Any() ? null : "is not mine";

        OutputFile.WriteFolder(folder, Refuse, temp => File.WriteAllText(Path.Combine(temp, "mine"), "1"));
        Assert.That(File.ReadAllText(Path.Combine(folder, "mine")), Is.EqualTo("1"));
        OutputFile.WriteFolder(folder, Refuse, temp => File.WriteAllText(Path.Combine(temp, "mine"), "2"));
        Assert.That(File.ReadAllText(Path.Combine(folder, "mine")), Is.EqualTo("2"), "an earlier output is replaced");

        // Cancelled or failed: the old folder stays, no temporary or .old folder is left.
        using var cancel = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => OutputFile.WriteFolder(folder, Refuse, temp =>
        {
            File.WriteAllText(Path.Combine(temp, "mine"), "3");
            cancel.Cancel();
        }, cancel.Token));
        Assert.Throws<InvalidOperationException>(() => OutputFile.WriteFolder(folder, Refuse, _ => throw new InvalidOperationException("boom")));
        Assert.That(File.ReadAllText(Path.Combine(folder, "mine")), Is.EqualTo("2"));
        Assert.That(Entries(), Is.EqualTo(new[] { "out" }));

        // A foreign folder is refused; a folder holding an input is refused.
        string foreign = Path.Combine(_dir, "foreign");
        Directory.CreateDirectory(foreign);
        File.WriteAllText(Path.Combine(foreign, "thesis.tex"), "years of work");
        var e = Assert.Throws<IOException>(() => OutputFile.WriteFolder(foreign, Refuse, _ => { }))!;
        Assert.That(e.Message, Does.Contain("is not mine").And.Contain("refusing"));
        e = Assert.Throws<IOException>(() => OutputFile.CheckFolder(folder, "--output", _ => null, Path.Combine(folder, "mine")))!;
        Assert.That(e.Message, Does.Contain("holds the input"));
        Assert.That(File.ReadAllText(Path.Combine(foreign, "thesis.tex")), Is.EqualTo("years of work"));

        // Through a link to a folder, the target folder is replaced and the link stays.
        string link = Path.Combine(_dir, "link");
        Directory.CreateSymbolicLink(link, folder);
        OutputFile.WriteFolder(link, Refuse, temp => File.WriteAllText(Path.Combine(temp, "mine"), "4"));
        Assert.That(new DirectoryInfo(link).LinkTarget, Is.EqualTo(folder));
        Assert.That(File.ReadAllText(Path.Combine(folder, "mine")), Is.EqualTo("4"));
    }

    /// <summary>The file type as <c>stat -c %F</c> prints it (an independent check of what our statx call reads).</summary>
    private static string RunStat(string path)
    {
        var psi = new ProcessStartInfo("stat", ["-L", "-c", "%F", path]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return output;
    }
}
