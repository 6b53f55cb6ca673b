using System.Text.Json.Nodes;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>
/// <see cref="LlamaTokenizer.EncodeWithMarkers"/> on the SentencePiece-style stories260K tokenizer (Llama 2 legacy form:
/// Prepend("▁") + Replace(" ", "▁")), with expected ids from the independent SentencePiece encoder of each piece and
/// from the vocabulary by hand.
/// </summary>
[TestFixture]
public sealed class LlamaTokenizerMarkersTests
{
    private static readonly string[] Markers = ["[hist]", "[target]"];
    private LlamaTokenizer _tok = null!;
    private SentencePieceBpeReference _ref = null!;
    private string _dir = "";

    [OneTimeSetUp]
    public void Load()
    {
        _dir = TestData.RequireShared("llm/stories260K/hf_derived");
        _tok = LlamaTokenizer.Load(_dir);
        _ref = new SentencePieceBpeReference(TestData.RequireShared("llm/stories260K/original/tok512.bin"));
    }

    private int Id(string piece) => _tok.TokenToId(piece) ?? throw new AssertionException($"'{piece}' is not in the stories260K vocabulary");

    [Test]
    public void Legacy_EveryPieceGetsItsOwnDummyPrefix()
    {
        // HF normalizes each piece between special tokens on its own: Prepend("▁") applies after every marker.
        string text = "'0. Lily (1995) (4 stars)[hist], '1. Tom (2001) (5 stars)[hist]'] ***Ben***[target]. Yes";
        List<int> expected =
        [
            1,
            .. _ref.Encode("'0. Lily (1995) (4 stars)"), -1,
            .. _ref.Encode(", '1. Tom (2001) (5 stars)"), -1,
            .. _ref.Encode("'] ***Ben***"), -2,
            .. _ref.Encode(". Yes"),
        ];
        Assert.That(_tok.EncodeWithMarkers(text, Markers), Is.EqualTo(expected));
        // The consequence, by hand: the "," right after a marker is "▁" + "," (stories260K has no "▁," piece), where
        // in running text it would be "," alone.
        Assert.That(_tok.TokenToId("▁,"), Is.Null, "precondition");
        Assert.That(_tok.EncodeWithMarkers("[hist],", Markers, addSpecialTokens: false), Is.EqualTo(new[] { -1, Id("▁"), Id(",") }));
        Assert.That(_tok.Encode("a,", addSpecialTokens: false), Is.EqualTo(new[] { Id("▁a"), Id(",") }));
    }

    [Test]
    public void HandDerived_SmallCases()
    {
        int a = Id("▁a");
        Assert.That(_tok.EncodeWithMarkers("[hist]a", Markers), Is.EqualTo(new[] { 1, -1, a }));
        Assert.That(_tok.EncodeWithMarkers("a[target]", Markers, addSpecialTokens: false), Is.EqualTo(new[] { a, -2 }));
        Assert.That(_tok.EncodeWithMarkers("[hist][target][hist]", Markers), Is.EqualTo(new[] { 1, -1, -2, -1 }));
        // Added tokens are split out in the same pass as markers.
        Assert.That(_tok.EncodeWithMarkers("a</s>[hist]<s>a", Markers, addSpecialTokens: false), Is.EqualTo(new[] { a, 2, -1, 1, a }));
        // A near miss is text, identical to Encode.
        Assert.That(_tok.EncodeWithMarkers("[hist", Markers), Is.EqualTo(_tok.Encode("[hist")));
    }

    [Test]
    public void WithoutMarkers_EqualsEncode()
    {
        foreach (string s in new[] { "", "Once upon a time", " leading", "Hello <s> world", "[hist] but no markers given" })
            Assert.That(_tok.EncodeWithMarkers(s, []), Is.EqualTo(_tok.Encode(s)), s);
        Assert.That(_tok.EncodeWithMarkers("Once upon a time", Markers), Is.EqualTo(_tok.Encode("Once upon a time")));
    }

    [Test]
    public void LongestMarkerWins_AtTheSamePosition()
    {
        // "[hist]" and "[hist]x" both match at 0: leftmost-longest takes the longer (as HF's added-token matcher).
        Assert.That(_tok.EncodeWithMarkers("[hist]xa", ["[hist]", "[hist]x"], addSpecialTokens: false), Is.EqualTo(new[] { -2, Id("▁a") }));
    }

    private LlamaTokenizer MetaspaceVariant(string scheme)
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "tokenizer.json")))!.AsObject();
        root["normalizer"] = null;
        root["pre_tokenizer"] = JsonNode.Parse($"{{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"{scheme}\",\"split\":false}}");
        return LlamaTokenizer.Parse(root.ToJsonString(), $"metaspace-{scheme}/tokenizer.json");
    }

    [Test]
    public void MetaspaceFirst_OnlyThePieceAtOffsetZero()
    {
        LlamaTokenizer first = MetaspaceVariant("first");
        int a = Id("a"), la = Id("▁a");
        // HF: prepend only when the split starts at offset 0 of the input (offsets_original().0 == 0).
        Assert.That(first.EncodeWithMarkers("a[hist]a", Markers, addSpecialTokens: false), Is.EqualTo(new[] { la, -1, a }));
        Assert.That(first.EncodeWithMarkers("[hist]a", Markers, addSpecialTokens: false), Is.EqualTo(new[] { -1, a }), "text starting with a marker: no piece at offset 0");
        Assert.That(first.EncodeWithMarkers("a[hist] a", Markers, addSpecialTokens: false), Is.EqualTo(new[] { la, -1, la }), "a space after the marker is the ▁");
        Assert.That(first.Encode("<s>a", addSpecialTokens: false), Is.EqualTo(new[] { 1, a }), "the same rule for added tokens");
        // "always" prepends to every piece, like the legacy normalizer.
        LlamaTokenizer always = MetaspaceVariant("always");
        Assert.That(always.EncodeWithMarkers("a[hist]a", Markers, addSpecialTokens: false), Is.EqualTo(new[] { la, -1, la }));
        Assert.That(MetaspaceVariant("never").EncodeWithMarkers("a[hist]a", Markers, addSpecialTokens: false), Is.EqualTo(new[] { a, -1, a }));
    }
}
