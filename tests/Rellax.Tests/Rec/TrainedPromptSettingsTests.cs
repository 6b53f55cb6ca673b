using NUnit.Framework;
using Rellax.Rec;

namespace Rellax.Tests.Rec;

/// <summary><see cref="TrainedPromptSettings"/>: reading what training recorded, no file, and malformed files named.</summary>
[TestFixture]
public sealed class TrainedPromptSettingsTests
{
    private string _dir = null!;

    [SetUp] public void Make() => _dir = Directory.CreateTempSubdirectory("rellax-trained-").FullName;

    [TearDown] public void Clean() => Directory.Delete(_dir, recursive: true);

    private void Write(string json) => File.WriteAllText(Path.Combine(_dir, TrainedPromptSettings.FileName), json);

    [Test]
    public void ReadsKRetrievalAndTemplateAndMapsReiTToSubr()
    {
        Assert.That(TrainedPromptSettings.Read(_dir), Is.Null, "no file: an adapter trained elsewhere");
        Write("{\"k\": 4, \"retrieval\": \"mixed\", \"template\": \"none\", \"lr\": 0.002}");
        var s = TrainedPromptSettings.Read(_dir)!;
        Assert.That((s.K, s.Retrieval, s.Template, s.EvaluationRetrieval), Is.EqualTo(((int?)4, "mixed", "none", (HistoryRetrieval?)HistoryRetrieval.Subr)));
        Write("{\"k\": null, \"retrieval\": null, \"template\": \"vicuna\"}");
        s = TrainedPromptSettings.Read(_dir)!;
        Assert.That((s.K, s.Retrieval, s.Template, s.EvaluationRetrieval), Is.EqualTo(((int?)null, (string?)null, "vicuna", (HistoryRetrieval?)null)));
    }

    [TestCase("{\"k\": ", "not valid JSON")]
    [TestCase("[1]", "expected a JSON object")]
    [TestCase("{\"k\": 0}", "\"k\" must be an integer >= 1, got 0")]
    [TestCase("{\"k\": \"4\"}", "\"k\" must be an integer >= 1, got \"4\"")]
    [TestCase("{\"retrieval\": \"random\"}", "\"retrieval\" must be one of recent, subr, mixed, got \"random\"")]
    [TestCase("{\"template\": \"chatml\"}", "\"template\" must be one of vicuna, none, got \"chatml\"")]
    public void AMalformedFileIsNamedWithTheField(string json, string message)
    {
        Write(json);
        var e = Assert.Throws<InvalidDataException>(() => TrainedPromptSettings.Read(_dir))!;
        Assert.That(e.Message, Does.Contain(TrainedPromptSettings.FileName).And.Contain(message));
    }
}
