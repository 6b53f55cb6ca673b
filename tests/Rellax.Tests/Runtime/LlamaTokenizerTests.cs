using System.Text.Json.Nodes;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>LlamaTokenizer on the stories260K tokenizer.json, checked against an independent SentencePiece BPE encoder.</summary>
[TestFixture]
public sealed class LlamaTokenizerTests
{
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

    /// <summary>Strings on which SentencePiece's remove_extra_whitespaces is a no-op, so SP and HF must agree.</summary>
    private static readonly string[] SpParity =
    [
        "Once upon a time, there was a little girl named Lily.",
        "She loved to play outside in the park. One day, she saw a big, red ball.",
        "Hello world",
        "a",
        "line one\nline two\n\nline four",
        "The year 2023 had 365 days and 8760 hours.",
        "café au lait",
        "naïve résumé",
        "I love 🍕 pizza",
        "Tab\tseparated\tvalues",
        "\"Quoted,\" she said — “smart quotes” and ‘single’…",
        "日本語のテキスト",
        "MiXeD CaSe 123abc XYZ!?;:",
        "the the the then they them there",
    ];

    /// <summary>Strings with leading, trailing or repeated spaces: HF tokenizer.json semantics (no collapsing).</summary>
    private static readonly string[] SpaceEdgeCases =
    [
        " leading space",
        "trailing space ",
        " both ",
        "double  space",
        "triple   space and  more",
        "  ",
        " ",
    ];

    [Test]
    public void Vocabulary_MatchesSourcesMd()
    {
        Assert.That(_tok.VocabSize, Is.EqualTo(512));
        Assert.That(_tok.BosId, Is.EqualTo(1));
        Assert.That(_tok.EosId, Is.EqualTo(2));
        Assert.That(_tok.IdToToken(259), Is.EqualTo("▁t"));
        Assert.That(_tok.IdToToken(260), Is.EqualTo("he"));
        Assert.That(_tok.IdToToken(3), Is.EqualTo("<0x00>"));
        Assert.That(_tok.IdToToken(258), Is.EqualTo("<0xFF>"));
        Assert.That(_tok.TokenToId("<s>"), Is.EqualTo(1));
        Assert.That(_tok.TokenToId("</s>"), Is.EqualTo(2));
        Assert.That(_tok.TokenToId("no such piece"), Is.Null);
        Assert.That(_tok.IdToToken(512), Is.Null);
        for (int id = 259; id < 512; id++)
            Assert.That(_tok.IdToToken(id), Is.EqualTo(_ref.Pieces[id]), $"piece {id} vs tok512.bin");
    }

    [TestCaseSource(nameof(SpParity))]
    public void Encode_IdenticalToSentencePiece(string text)
    {
        Assert.That(SentencePieceBpeReference.RemoveExtraWhitespaces(text), Is.EqualTo(text), "precondition: SP normalization is a no-op");
        List<int> expected = [1, .. _ref.Encode(text)];
        Assert.That(_tok.Encode(text), Is.EqualTo(expected));
        Assert.That(_tok.Encode(text, addSpecialTokens: false), Is.EqualTo(expected.Skip(1)));
    }

    [TestCaseSource(nameof(SpaceEdgeCases))]
    public void Encode_SpacesFollowHfSemantics_NoCollapse(string text)
    {
        // HF: Prepend("▁") + Replace(" " → "▁") with no whitespace removal, then the same BPE.
        List<int> expected = [1, .. _ref.Encode(text)];
        Assert.That(_tok.Encode(text), Is.EqualTo(expected));
        // And this really differs from SentencePiece with remove_extra_whitespaces (the documented difference).
        List<int> sp = [1, .. _ref.Encode(SentencePieceBpeReference.RemoveExtraWhitespaces(text))];
        Assert.That(_tok.Encode(text), Is.Not.EqualTo(sp));
    }

    [Test]
    public void Encode_KnownIdsFromSourcesMd()
    {
        // SOURCES.md: greedy output starts "Once upon a time" and the ids after BOS start 403 407 261 378.
        Assert.That(_tok.Decode([403, 407, 261, 378]), Is.EqualTo("Once upon a time"));
        Assert.That(_tok.Encode("Once upon a time"), Is.EqualTo(new[] { 1, 403, 407, 261, 378 }));
        Assert.That(_tok.Encode(""), Is.EqualTo(new[] { 1 }));
        Assert.That(_tok.Encode("", addSpecialTokens: false), Is.Empty);
    }

    [Test]
    public void Encode_EmojiUsesByteFallback()
    {
        // 🍕 = F0 9F 8D 95 → ids 3 + byte.
        IReadOnlyList<int> ids = _tok.Encode("🍕", addSpecialTokens: false);
        Assert.That(ids, Is.EqualTo(new[] { _tok.TokenToId("▁")!.Value, 3 + 0xF0, 3 + 0x9F, 3 + 0x8D, 3 + 0x95 }));
    }

    [Test]
    public void Encode_LiteralSpecialTokens_AreSplitOutLikeHf()
    {
        // HF splits added tokens out of the raw text first; each remaining piece is normalized on its own
        // (so gets its own "▁" prefix), whether or not special tokens are added around the text.
        Assert.That(_tok.Encode("<s>"), Is.EqualTo(new[] { 1, 1 }));
        Assert.That(_tok.Encode("<s>", addSpecialTokens: false), Is.EqualTo(new[] { 1 }));
        Assert.That(_tok.Encode("<s>Hello", addSpecialTokens: false), Is.EqualTo(new List<int> { 1 }.Concat(_ref.Encode("Hello"))));
        Assert.That(_tok.Encode("Hello <s> world"),
            Is.EqualTo(new List<int> { 1 }.Concat(_ref.Encode("Hello ")).Append(1).Concat(_ref.Encode(" world"))));
        Assert.That(_tok.Encode("end</s>", addSpecialTokens: false), Is.EqualTo(_ref.Encode("end").Append(2)));
        // A near miss is ordinary text.
        Assert.That(_tok.Encode("<s", addSpecialTokens: false), Is.EqualTo(_ref.Encode("<s")));
    }

    [Test]
    public void DecodeEncode_RoundTrips()
    {
        foreach (string s in SpParity.Concat(SpaceEdgeCases).Append(""))
            Assert.That(_tok.Decode(_tok.Encode(s)), Is.EqualTo(s), $"round trip of \"{s}\"");
    }

    [Test]
    public void Decode_ByteFallbackAndInvalidUtf8()
    {
        Assert.That(_tok.Decode([3 + 0xE2, 3 + 0x82, 3 + 0xAC]), Is.EqualTo("€"));
        Assert.That(_tok.Decode([3 + 0xE2, 3 + 0x82]), Is.EqualTo("\uFFFD\uFFFD"), "truncated sequence: one U+FFFD per byte token (HF ByteFallback)");
        Assert.That(_tok.Decode([3 + 0xFF]), Is.EqualTo("\uFFFD"));
        Assert.That(_tok.Decode([1, 403, 2]), Is.EqualTo("Once"));
        Assert.That(_tok.Decode([1, 403, 2], skipSpecialTokens: false), Is.EqualTo("<s> Once</s>"));
        Assert.Throws<ArgumentOutOfRangeException>(() => _tok.Decode([512]));
    }

    // ---------------------------------------------------------------- tokenizer.json variants

    private LlamaTokenizer Variant(Action<JsonObject> edit)
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "tokenizer.json")))!.AsObject();
        edit(root);
        return LlamaTokenizer.Parse(root.ToJsonString(), "variant/tokenizer.json",
            File.ReadAllText(Path.Combine(_dir, "tokenizer_config.json")), "variant/tokenizer_config.json");
    }

    [Test]
    public void MetaspacePreTokenizerForm_GivesTheSameIds()
    {
        LlamaTokenizer meta = Variant(r =>
        {
            r["normalizer"] = null;
            r["pre_tokenizer"] = JsonNode.Parse("{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"always\",\"split\":false}");
            // A Metaspace decoder alone leaves <0xNN> pieces as text (as in HF); ByteFallback goes first.
            r["decoder"] = JsonNode.Parse("{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"}," +
                                          "{\"type\":\"Metaspace\",\"replacement\":\"▁\",\"prepend_scheme\":\"always\",\"split\":false}]}");
        });
        foreach (string s in SpParity)
        {
            Assert.That(meta.Encode(s), Is.EqualTo(new List<int> { 1 }.Concat(_ref.Encode(s))), s);
            Assert.That(meta.Decode(meta.Encode(s)), Is.EqualTo(s), s);
        }
        // Metaspace does not add a second "▁" when the text already starts with a space.
        Assert.That(meta.Encode(" leading", addSpecialTokens: false), Is.EqualTo(_ref.Encode("leading")));
    }

    [Test]
    public void MergesAsPairs_GiveTheSameIds()
    {
        LlamaTokenizer pairs = Variant(r =>
        {
            var merges = new JsonArray();
            foreach (JsonNode? m in r["model"]!["merges"]!.AsArray())
            {
                string[] ab = m!.GetValue<string>().Split(' ');
                merges.Add(new JsonArray(ab[0], ab[1]));
            }
            r["model"]!["merges"] = merges;
        });
        foreach (string s in SpParity)
            Assert.That(pairs.Encode(s), Is.EqualTo(_tok.Encode(s)), s);
    }

    [Test]
    public void AddEosFromTokenizerConfig()
    {
        string cfg = File.ReadAllText(Path.Combine(_dir, "tokenizer_config.json")).Replace("\"add_eos_token\": false", "\"add_eos_token\": true");
        Assert.That(cfg, Does.Contain("\"add_eos_token\": true"), "precondition: edit applied");
        LlamaTokenizer t = LlamaTokenizer.Parse(File.ReadAllText(Path.Combine(_dir, "tokenizer.json")), "t", cfg, "c");
        Assert.That(t.Encode("a"), Is.EqualTo(new List<int> { 1 }.Concat(_ref.Encode("a")).Append(2)));
    }

    [Test]
    public void UnsupportedNormalizer_IsRejectedByName()
    {
        var ex = Assert.Throws<NotSupportedException>(() => Variant(r => r["normalizer"] = JsonNode.Parse("{\"type\":\"Lowercase\"}")));
        Assert.That(ex!.Message, Does.Contain("Lowercase").And.Contain("variant/tokenizer.json").And.Contain("'normalizer'"));
    }

    [Test]
    public void UnsupportedPreTokenizers_AreRejectedByField()
    {
        var ex = Assert.Throws<NotSupportedException>(() =>
            Variant(r => r["pre_tokenizer"] = JsonNode.Parse("{\"type\":\"Whitespace\"}")));
        Assert.That(ex!.Message, Does.Contain("Whitespace").And.Contain("'pre_tokenizer'"));
        // ByteLevel is supported, but not followed by another step, and Split only before ByteLevel.
        ex = Assert.Throws<NotSupportedException>(() => Variant(r => r["pre_tokenizer"] = JsonNode.Parse(
            "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},{\"type\":\"Digits\",\"individual_digits\":true}]}")));
        Assert.That(ex!.Message, Does.Contain("pre_tokenizer.pretokenizers[1]").And.Contain("Digits"));
        ex = Assert.Throws<NotSupportedException>(() => Variant(r => r["pre_tokenizer"] = JsonNode.Parse(
            "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false}")));
        Assert.That(ex!.Message, Does.Contain("Split without a following ByteLevel"));
        var bad = Assert.Throws<InvalidDataException>(() => Variant(r => r["pre_tokenizer"] = JsonNode.Parse(
            "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"},{\"type\":\"ByteLevel\"}]}")));
        Assert.That(bad!.Message, Does.Contain("pre_tokenizer.pretokenizers[0].behavior").And.Contain("Sideways"));
        ex = Assert.Throws<NotSupportedException>(() => Variant(r => r["pre_tokenizer"] = JsonNode.Parse(
            "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?<=a\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}")));
        Assert.That(ex!.Message, Does.Contain("pre_tokenizer.pretokenizers[0].pattern").And.Contain("cannot be compiled"));
    }

    [Test]
    public void UnsupportedDecoderAndPostProcessor_AreRejectedByField()
    {
        var ex = Assert.Throws<NotSupportedException>(() => Variant(r => r["decoder"] = JsonNode.Parse("{\"type\":\"WordPiece\",\"prefix\":\"##\"}")));
        Assert.That(ex!.Message, Does.Contain("WordPiece").And.Contain("'decoder'"));
        ex = Assert.Throws<NotSupportedException>(() => Variant(r => r["post_processor"] = JsonNode.Parse("{\"type\":\"BertProcessing\",\"sep\":[\"</s>\",2],\"cls\":[\"<s>\",1]}")));
        Assert.That(ex!.Message, Does.Contain("BertProcessing").And.Contain("'post_processor'"));
    }

    [Test]
    public void NonBpeModel_IsRejected()
    {
        var ex = Assert.Throws<NotSupportedException>(() => Variant(r => r["model"]!["type"] = "Unigram"));
        Assert.That(ex!.Message, Does.Contain("Unigram"));
    }

    [Test]
    public void MissingTokenizerJson_IsFileNotFound()
    {
        var ex = Assert.Throws<FileNotFoundException>(() => LlamaTokenizer.Load(Path.GetTempPath()));
        Assert.That(ex!.Message, Does.Contain("tokenizer.json"));
    }
}
