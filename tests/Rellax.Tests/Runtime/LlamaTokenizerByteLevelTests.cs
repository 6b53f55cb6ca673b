using System.Text.Json.Nodes;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>
/// Byte-level BPE on small tokenizer.json files written here (Qwen2 and GPT-2 shapes), with expected ids worked out by
/// hand from the vocabulary: id = byte value for the 256 byte chars, then the merged pieces from 256 on.
/// </summary>
[TestFixture]
public sealed class LlamaTokenizerByteLevelTests
{
    /// <summary>Qwen2's pre-tokenizer regex (tokenizer.json of Qwen2-0.5B): like Llama 3's but single digits.</summary>
    private const string Qwen2Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    // Merged pieces (ids from 256, in merge order). Ġ is the space byte's char, Ċ the newline's.
    private const int Gt = 256, He = 257, GThe = 258, Twenty = 259, GCat = 260;
    private const int EndOfText = 300, ImStart = 301, ImEnd = 302;

    private static JsonObject Vocab()
    {
        var v = new JsonObject();
        for (int b = 0; b < 256; b++) v[ByteChar(b)] = b;
        v["Ġt"] = Gt;
        v["he"] = He;
        v["Ġthe"] = GThe;
        v["20"] = Twenty;
        v["Ġcat"] = GCat; // in the vocabulary, but no merge builds it: only ignore_merges can produce it
        return v;
    }

    /// <summary>GPT-2 bytes_to_unicode for one byte (the test's own copy).</summary>
    private static string ByteChar(int b) => LlamaTokenizerCl100kTests.ToByteChars([(byte)b]);

    private const string ByteLevelPostProcessor = """{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}""";

    private static string TokenizerJson(string preTokenizer, bool ignoreMerges = false, string normalizer = """{"type":"NFC"}""",
        string postProcessor = ByteLevelPostProcessor) => $$"""
        {
          "version": "1.0",
          "added_tokens": [
            {"id": 300, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 301, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 302, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
          ],
          "normalizer": {{normalizer}},
          "pre_tokenizer": {{preTokenizer}},
          "post_processor": {{postProcessor}},
          "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
          "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "",
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": {{(ignoreMerges ? "true" : "false")}},
            "vocab": {{Vocab().ToJsonString()}},
            "merges": ["Ġ t", "h e", "Ġt he", ["2", "0"]]
          }
        }
        """;

    private static readonly string Qwen2PreTokenizer = $$"""
        {"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"Regex": {{System.Text.Json.JsonSerializer.Serialize(Qwen2Pattern)}}}, "behavior": "Isolated", "invert": false},
          {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}
        """;

    private const string Gpt2PreTokenizer = """{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}""";

    internal static LlamaTokenizer Qwen2(bool ignoreMerges = false, string? config = null) =>
        LlamaTokenizer.Parse(TokenizerJson(Qwen2PreTokenizer, ignoreMerges), "qwen2/tokenizer.json",
            config ?? """{"add_bos_token": false, "bos_token": null, "eos_token": "<|im_end|>"}""", "qwen2/tokenizer_config.json");

    [Test]
    public void ByteMap_IsGpt2s()
    {
        Assert.That(ByteChar(' '), Is.EqualTo("Ġ"));
        Assert.That(ByteChar('\n'), Is.EqualTo("Ċ"));
        Assert.That(ByteChar('a'), Is.EqualTo("a"));
        Assert.That(ByteChar(0xAD), Is.EqualTo("Ń"));
        Assert.That(Enumerable.Range(0, 256).Select(ByteChar).Distinct().Count(), Is.EqualTo(256));
    }

    [Test]
    public void Qwen2_ChatTurn_HandDerivedIds()
    {
        LlamaTokenizer tok = Qwen2();
        // "cafe\u0301" is NFC-normalized to "café" (U+00E9 = C3 A9) before the bytes are taken.
        string text = "<|im_start|>user\nthe the cafe\u0301 2024<|im_end|>";
        int[] expected =
        [
            ImStart, 'u', 's', 'e', 'r',  // "user" is one \p{L}+ piece without merges
            '\n',                         // "\n" (\s*[\r\n]+)
            't', He,                      // "the": "h e" merges; "Ġ t" needs the space
            GThe,                         // " the": Ġ t → Ġt, h e → he, Ġt he → Ġthe
            ' ', 'c', 'a', 'f', 0xC3, 0xA9, // " café"
            ' ',                          // " " before the digits (\s+(?!\S) ... the space alone)
            '2', '0', '2', '4',           // \p{N}: one digit per piece, so the "2 0" merge never applies
            ImEnd,
        ];
        Assert.That(tok.Encode(text), Is.EqualTo(expected));
        Assert.That(tok.Decode(expected, skipSpecialTokens: false), Is.EqualTo("<|im_start|>user\nthe the café 2024<|im_end|>"));
        Assert.That(tok.Decode(expected), Is.EqualTo("user\nthe the café 2024"));
        Assert.That(tok.BosId, Is.Null);
        Assert.That(tok.EosId, Is.EqualTo(ImEnd));
        Assert.That(tok.VocabSize, Is.EqualTo(303));
    }

    [Test]
    public void Nfc_IsApplied_AndCanBeAbsent()
    {
        LlamaTokenizer nfc = Qwen2();
        LlamaTokenizer raw = LlamaTokenizer.Parse(TokenizerJson(Qwen2PreTokenizer, normalizer: "null"), "raw/tokenizer.json");
        Assert.That(nfc.Encode("e\u0301"), Is.EqualTo(new[] { 0xC3, 0xA9 }));
        Assert.That(raw.Encode("e\u0301"), Is.EqualTo(new[] { 'e', 0xCC, 0x81 }), "U+0301 = CC 81, a piece of its own (\\p{L}+ stops before the mark)");
    }

    [Test]
    public void Merges_AreAppliedWithinPiecesOnly()
    {
        LlamaTokenizer tok = Qwen2();
        Assert.That(tok.Encode("the"), Is.EqualTo(new[] { 't', He }));
        Assert.That(tok.Encode(" the"), Is.EqualTo(new[] { GThe }));
        Assert.That(tok.Encode("xthe"), Is.EqualTo(new[] { 'x', 't', He }), "one \\p{L}+ piece; 'Ġt' needs a space");
        Assert.That(tok.Encode("20"), Is.EqualTo(new[] { '2', '0' }), "Qwen2 splits digits");
    }

    [Test]
    public void IgnoreMerges_TakesWholePieces()
    {
        Assert.That(Qwen2(ignoreMerges: false).Encode(" cat"), Is.EqualTo(new[] { ' ', 'c', 'a', 't' }));
        Assert.That(Qwen2(ignoreMerges: true).Encode(" cat"), Is.EqualTo(new[] { GCat }));
        Assert.That(Qwen2(ignoreMerges: true).Encode(" cats"), Is.EqualTo(new[] { ' ', 'c', 'a', 't', 's' }), "only whole pieces");
    }

    [Test]
    public void AddBosToken_FromTokenizerConfig()
    {
        LlamaTokenizer tok = Qwen2(config: """{"add_bos_token": true, "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}""");
        Assert.That(tok.BosId, Is.EqualTo(EndOfText));
        Assert.That(tok.Encode("the"), Is.EqualTo(new[] { EndOfText, 't', He }));
        Assert.That(tok.Encode("the", addSpecialTokens: false), Is.EqualTo(new[] { 't', He }));
    }

    [Test]
    public void Llama3Style_TemplatePostProcessorAddsBos()
    {
        // Llama 3: Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> $A)] and no add_bos_token in tokenizer_config.
        const string post = """
            {"type": "Sequence", "processors": [
              {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
              {"type": "TemplateProcessing",
               "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
               "pair": [],
               "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [300], "tokens": ["<|endoftext|>"]}}}]}
            """;
        LlamaTokenizer tok = LlamaTokenizer.Parse(TokenizerJson(Qwen2PreTokenizer, ignoreMerges: true, normalizer: "null", postProcessor: post),
            "llama3/tokenizer.json", """{"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}""", "llama3/tokenizer_config.json");
        Assert.That(tok.BosId, Is.EqualTo(EndOfText));
        Assert.That(tok.PrefixIds, Is.EqualTo(new[] { EndOfText }));
        Assert.That(tok.Encode(" cat the"), Is.EqualTo(new[] { EndOfText, GCat, GThe }));
        Assert.That(tok.EncodeWithMarkers(" cat[hist] the", ["[hist]"]), Is.EqualTo(new[] { EndOfText, GCat, -1, GThe }));
        Assert.That(tok.Decode(tok.Encode(" cat the")), Is.EqualTo(" cat the"));
    }

    [Test]
    public void Gpt2Style_ByteLevelRegexAndPrefixSpace_PerSplit()
    {
        LlamaTokenizer tok = LlamaTokenizer.Parse(TokenizerJson(Gpt2PreTokenizer, normalizer: "null"), "gpt2/tokenizer.json");
        // add_prefix_space: " the" for the first word too; GPT-2's regex keeps " the" pieces.
        Assert.That(tok.Encode("the the"), Is.EqualTo(new[] { GThe, GThe }));
        // HF applies add_prefix_space to every split between added tokens.
        Assert.That(tok.Encode("the<|im_end|>the"), Is.EqualTo(new[] { GThe, ImEnd, GThe }));
        // GPT-2's regex: contractions and digit runs (" 2024" is one piece: Ġ 2 0 → the "2 0" merge applies).
        Assert.That(tok.Encode("it's 2024"), Is.EqualTo(new[] { ' ', 'i', 't', '\'', 's', ' ', Twenty, '2', '4' }));
        Assert.That(tok.Decode(tok.Encode("it's 2024")), Is.EqualTo(" it's 2024"), "the ByteLevel decoder keeps the added space");
    }

    [Test]
    public void EncodeWithMarkers_ByteLevel_PiecesAreIndependent()
    {
        LlamaTokenizer tok = Qwen2();
        string[] markers = ["[hist]", "[target]"];
        // "the[hist] the": pieces "the", " the"; the space after the marker stays with its piece.
        Assert.That(tok.EncodeWithMarkers("the[hist] the", markers), Is.EqualTo(new[] { 't', He, -1, GThe }));
        // A marker inside what would be one regex piece splits it: "t[target]he" → "t", "he".
        Assert.That(tok.EncodeWithMarkers("t[target]he", markers), Is.EqualTo(new[] { 't', -2, He }));
        Assert.That(tok.Encode("t[target]he"), Is.EqualTo(new[] { 't', '[', 't', 'a', 'r', 'g', 'e', 't', ']', He }), "without markers it is text");
        // Markers and added tokens in one pass; BOS/EOS only as the post-processor says (none here).
        Assert.That(tok.EncodeWithMarkers("<|im_start|>[hist]<|im_end|>[hist]", markers), Is.EqualTo(new[] { ImStart, -1, ImEnd, -1 }));
        Assert.That(tok.EncodeWithMarkers("", markers), Is.Empty);
    }

    [Test]
    public void EncodeWithMarkers_RejectsBadMarkers()
    {
        LlamaTokenizer tok = Qwen2();
        Assert.Throws<ArgumentException>(() => tok.EncodeWithMarkers("x", ["[hist]", ""]));
        var ex = Assert.Throws<ArgumentException>(() => tok.EncodeWithMarkers("x", ["[hist]", "[hist]"]));
        Assert.That(ex!.Message, Does.Contain("[hist]"));
    }

    [Test]
    public void LoneSurrogate_IsEncodedAsReplacementCharacter()
    {
        LlamaTokenizer tok = Qwen2();
        // U+FFFD = EF BF BD.
        Assert.That(tok.Encode("\uD800"), Is.EqualTo(new[] { 0xEF, 0xBF, 0xBD }));
    }

    [Test]
    public void RegexTranslation_PossessiveToAtomic()
    {
        Assert.That(PreTokenizerRegex.TranslatePossessive(@"[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s]++[\r\n]*+|\s++$|a(?:bc)++"),
            Is.EqualTo(@"(?>[^\r\n\p{L}\p{N}]?)(?>\p{L}+)|(?>\p{N}{1,3})| ?(?>[^\s]+)(?>[\r\n]*)|(?>\s+)$|a(?>(?:bc)+)"));
        Assert.That(PreTokenizerRegex.TranslatePossessive(Qwen2Pattern), Is.EqualTo(Qwen2Pattern), "nothing to translate");
    }

    [TestCase("cafe\u0301", "caf\u00E9")]
    [TestCase("A\u030A", "\u00C5")]                               // Å
    [TestCase("\u212B", "\u00C5")]                                // Angstrom sign: singleton decomposition
    [TestCase("a\u0323\u0302", "\u1EAD")]                         // ậ: dot below (220) then circumflex (230)
    [TestCase("a\u0302\u0323", "\u1EAD")]                         // same after canonical reordering
    [TestCase("e\u0301\u0301", "\u00E9\u0301")]                   // the second acute is blocked
    [TestCase("\u1100\u1161\u11A8", "\uAC01")]                    // Hangul L V T → 각
    [TestCase("\u0958", "\u0915\u093C")]                          // composition exclusion: stays decomposed
    [TestCase("\u0301a", "\u0301a")]                               // leading non-starter
    [TestCase("plain ASCII, Ünïcödé ok", "plain ASCII, Ünïcödé ok")]
    [TestCase("\U0001D15E", "\U0001D157\U0001D165")]                // musical half note: excluded, decomposes
    public void Nfc_MatchesTheStandard(string input, string expected)
    {
        // Expected values from the Unicode Character Database (decompositions, classes, exclusions), written by hand.
        Assert.That(UnicodeNormalization.Normalize(input, compose: true), Is.EqualTo(expected));
    }

    [TestCase("\u00E9", "e\u0301")]
    [TestCase("\uAC01", "\u1100\u1161\u11A8")]
    [TestCase("\u1EAD", "a\u0323\u0302")]
    public void Nfd_MatchesTheStandard(string input, string expected) =>
        Assert.That(UnicodeNormalization.Normalize(input, compose: false), Is.EqualTo(expected));

    [Test]
    public void NfkcNormalizer_IsRejectedByName()
    {
        var ex = Assert.Throws<NotSupportedException>(() =>
            LlamaTokenizer.Parse(TokenizerJson(Qwen2PreTokenizer, normalizer: """{"type":"NFKC"}"""), "nfkc/tokenizer.json"));
        Assert.That(ex!.Message, Does.Contain("NFKC").And.Contain("'normalizer'").And.Contain("nfkc/tokenizer.json"));
    }
}
