using NUnit.Framework;
using Rellax.Kernels.Cpu;
using Rellax.Rec;
using Rellax.Runtime;

namespace Rellax.Tests.Cli;

/// <summary>
/// Issue 15 through the <c>rellax</c> executable, the library half: every command's input files and folders swapped
/// (a folder where a file is expected and the reverse), endless and over-long input lines, and <c>retrieve</c> on raw item
/// vectors. Each error is one line <c>rellax: ...</c> with exit code 1, no stack trace.
/// </summary>
[TestFixture]
public sealed class InputErrorsCommandTests
{
    private string _dir = null!;
    private string _file = null!;
    private string _index = null!;

    [OneTimeSetUp]
    public void Create()
    {
        _dir = Directory.CreateTempSubdirectory("rellax-inputs-").FullName;
        _file = Path.Combine(_dir, "a-file.txt");
        File.WriteAllText(_file, "not a folder\n");
        _index = Path.Combine(_dir, "index.safetensors");
        using var cpu = new CpuBackend(1);
        using var index = SubrIndex.Build(cpu, Subr.SubrCheck.Vectors(20, 4, 1), 20, 4);
        index.Save(_index);
    }

    [OneTimeTearDown]
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string OneErrorLine(params string[] args)
    {
        var (code, stdout, stderr) = RellaxCommandTests.Run(args);
        Assert.That(code, Is.EqualTo(1), $"rellax {string.Join(' ', args)}: {stderr}");
        Assert.That(stdout, Is.Empty);
        string line = stderr.TrimEnd('\n');
        Assert.That(line, Does.StartWith("rellax: ").And.Not.Contain("\n").And.Not.Contain("   at "), "one line, no stack trace");
        Assert.That(line, Does.Not.Contain("(Parameter '").And.Not.Contain("Actual value was"));
        return line;
    }

    [Test]
    public void AFolderGivenForAnInputFileSaysSo()
    {
        string folder = $"'{_dir}' is a folder, not a file";
        Assert.That(OneErrorLine("score", "--input", _dir), Does.Contain("input file " + folder));
        Assert.That(OneErrorLine("embed", "--items", _dir, "--output", Path.Combine(_dir, "out.safetensors")), Does.Contain("items file " + folder));
        Assert.That(OneErrorLine("retrieve", "--samples", _dir, "--embeddings", _index, "--k", "2"), Does.Contain("samples file " + folder));
        string samples = Path.Combine(_dir, "samples.jsonl");
        File.WriteAllText(samples, "{\"id\": 1, \"history\": [1, 2], \"target\": 3}\n");
        Assert.That(OneErrorLine("retrieve", "--samples", samples, "--embeddings", _dir, "--k", "2"), Does.Contain("SUBR index file " + folder));
        Assert.That(OneErrorLine("index", "--vectors", _dir, "--output", Path.Combine(_dir, "i.safetensors")), Does.Contain("vectors file " + folder));
    }

    [Test]
    public void AFileGivenForAnInputFolderSaysSo()
    {
        string file = $"'{_file}' is a file, not a folder";
        Assert.That(OneErrorLine("generate", "--model", _file), Does.Contain("model directory " + file));
        string requests = Path.Combine(_dir, "requests.jsonl");
        File.WriteAllText(requests, "{\"id\": 1, \"prompt\": \"Once upon a time\"}\n");
        Assert.That(OneErrorLine("score", "--model", _file, "--input", requests), Does.Contain("model directory " + file));
        Assert.That(OneErrorLine("score", "--adapter", _file, "--input", requests), Does.Contain("adapter directory " + file));
        Assert.That(OneErrorLine("prepare", "--dataset", "movielens-100k", "--data", _file, "--output", Path.Combine(_dir, "p")), Does.Contain("--data folder " + file));
        Assert.That(OneErrorLine("eval", "--data", _file), Does.Contain("prepared dataset folder " + file));
        Assert.That(OneErrorLine("export", "--data", _file, "--output", Path.Combine(_dir, "t.jsonl")), Does.Contain("prepared dataset folder " + file));
    }

    [Test]
    public void EndlessAndOverLongInputLinesFailFastNamingFileAndLine()
    {
        if (!File.Exists("/dev/zero")) Assert.Ignore("no /dev/zero here");
        const string limit = "the line is longer than 16 MiB, the limit on one line";
        Assert.That(OneErrorLine("score", "--input", "/dev/zero"), Is.EqualTo($"rellax: /dev/zero:1: {limit} (is this the right file?)"));
        Assert.That(OneErrorLine("embed", "--items", "/dev/zero", "--output", Path.Combine(_dir, "e.safetensors")), Does.Contain($"/dev/zero:1: {limit}"));
        Assert.That(OneErrorLine("retrieve", "--samples", "/dev/zero", "--embeddings", _index, "--k", "2"), Does.Contain($"/dev/zero:1: {limit}"));

        string longLine = Path.Combine(_dir, "long.jsonl");
        using (var w = new StreamWriter(longLine))
        {
            w.Write("{\"id\": 1, \"prompt\": \"fine\"}\n\n{\"id\": 2, \"prompt\": \"");
            w.Write(new string('x', 17 << 20));
            w.Write("\"}\n");
        }
        Assert.That(OneErrorLine("score", "--input", longLine), Is.EqualTo($"rellax: {longLine}:3: {limit} (is this the right file?)"));
    }

    [Test]
    public void AHugePromptIsRefusedByItsLengthWithoutTokenizingItAll()
    {
        // 8 MB of prompt in one 8 MB line: under the line cap, far over stories260K's 512 positions.
        string input = Path.Combine(_dir, "huge-prompt.jsonl");
        File.WriteAllText(input, "{\"id\": \"big\", \"prompt\": \"" + string.Concat(Enumerable.Repeat("Lily and Tom went to the park. ", 8 << 15)) + "\"}\n");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string line = OneErrorLine("score", "--model", Model.ModelPaths.Stories260KOrIgnore(), "--input", input);
        Assert.That(line, Does.StartWith($"rellax: {input}:1: id \"big\": the prompt is at least ").And.Contain("tokens long, more than the model's max_position_embeddings = 512"));
        TestContext.Out.WriteLine($"refused in {clock.Elapsed.TotalSeconds:F1} s (process start included)");

        // generate --prompt: as long as one argument may be (128 KiB on Linux), refused by its length too.
        line = OneErrorLine("generate", "--prompt", string.Concat(Enumerable.Repeat("Lily and Tom went to the park. ", 4000)));
        Assert.That(line, Does.StartWith("rellax: the prompt is at least ").And.Contain("tokens long, more than the model's max_position_embeddings = 512"));
    }

    [Test]
    public void RetrieveOnRawItemVectorsIndexesThemWithAWarningAsIndexWould()
    {
        const int n = 30, dim = 6;
        var vectors = Subr.SubrCheck.Vectors(n, dim, 5).Select((x, i) => x + (i % dim == 0 ? 4f : 0f)).ToArray();
        long[] ids = Enumerable.Range(0, n).Select(i => 500L + i).ToArray();
        string raw = Path.Combine(_dir, "items.safetensors");
        var w = new SafeTensorsWriter();
        w.Add<float>("embeddings", SafeTensorDType.F32, [n, dim], vectors);
        w.Add<long>("item_ids", SafeTensorDType.I64, [n], ids);
        w.Metadata["format"] = "rellax-item-embeddings";
        w.Metadata["similarity"] = "dot";
        w.Save(raw);
        string samples = Path.Combine(_dir, "raw-samples.jsonl");
        File.WriteAllLines(samples, Enumerable.Range(0, 8).Select(s => $"{{\"id\": {s}, \"history\": [{string.Join(", ", ids.Skip(s).Take(12))}], \"target\": {ids[(s * 5) % n]}}}"));

        var (code, fromRaw, stderr) = RellaxCommandTests.Run("retrieve", "--embeddings", raw, "--samples", samples, "--k", "3", "--backend", "cpu");
        Assert.That(code, Is.EqualTo(0), stderr);
        Assert.That(stderr, Does.Contain("warning").And.Contain("not an index built by `rellax index`"));
        string built = Path.Combine(_dir, "built.safetensors");
        var (code2, _, err2) = RellaxCommandTests.Run("index", "--vectors", raw, "--output", built, "--backend", "cpu");
        Assert.That(code2, Is.EqualTo(0), err2);
        Assert.That(err2, Does.Contain("centred"));
        var (code3, fromIndex, err3) = RellaxCommandTests.Run("retrieve", "--embeddings", built, "--samples", samples, "--k", "3", "--backend", "cpu");
        Assert.That(code3, Is.EqualTo(0), err3);
        Assert.That(err3, Does.Not.Contain("warning"));
        Assert.That(fromRaw, Is.EqualTo(fromIndex), "the same ranking as the index `rellax index` builds by default");
    }
}
