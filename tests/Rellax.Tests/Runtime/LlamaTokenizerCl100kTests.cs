using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Json;
using TiktokenTokenizer = Microsoft.ML.Tokenizers.TiktokenTokenizer;
using NUnit.Framework;
using Rellax.Runtime;

namespace Rellax.Tests.Runtime;

/// <summary>
/// The byte-level BPE path on a real vocabulary: a Llama-3-style tokenizer.json built from the cl100k ranks
/// (Microsoft.ML.Tokenizers.Data.Cl100kBase), compared with Microsoft.ML.Tokenizers' tiktoken implementation and with a
/// tiktoken-algorithm reference written here.
/// </summary>
/// <remarks>
/// The tokenizer.json: vocab = the GPT-2 byte-char form of each rank's bytes; merges derived from the ranks (for every
/// token of 2+ bytes, the split into two vocabulary tokens whose larger rank is smallest, listed in rank order); the
/// pre-tokenizer is Split(Llama 3's regex, which is cl100k's original pattern, Isolated) then ByteLevel without regex;
/// ByteLevel decoder; the cl100k special tokens as added tokens. tiktoken takes a piece that is itself in the
/// vocabulary whole, which is what <c>ignore_merges: true</c> (Llama 3) does, so that is the exact counterpart.
/// </remarks>
[TestFixture]
public sealed class LlamaTokenizerCl100kTests
{
    /// <summary>Llama 3's pre-tokenizer regex (tokenizer.json of Meta-Llama-3-8B), identical to tiktoken's first cl100k pattern.</summary>
    internal const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>tiktoken's current cl100k pattern, with possessive quantifiers (translated to atomic groups for .NET).</summary>
    private const string TiktokenPossessivePattern =
        @"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

    private TiktokenTokenizer _tiktoken = null!;
    private Dictionary<string, int> _ranks = null!;        // byte-char form → rank
    private Dictionary<string, int> _special = null!;
    private List<(string A, string B)> _merges = null!;
    private int _tokensWithoutSplit;
    private int _minMaxDiffers;
    private LlamaTokenizer _tok = null!;                   // ignore_merges: true (Llama 3)

    [OneTimeSetUp]
    public void Build()
    {
        _tiktoken = TiktokenTokenizer.CreateForEncoding("cl100k_base");
        _ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        // The ranks file embedded in Microsoft.ML.Tokenizers.Data.Cl100kBase: deflated, a "Capacity: N" line, then one
        // base64 token per line whose rank is its line number (or "base64 rank" where a line gives the rank).
        Assembly data = Assembly.Load("Microsoft.ML.Tokenizers.Data.Cl100kBase");
        using (Stream raw = data.GetManifestResourceStream("cl100k_base.tiktoken.deflate")
                            ?? throw new InvalidOperationException("cl100k_base.tiktoken.deflate not found in the data package."))
        using (var reader = new StreamReader(new DeflateStream(raw, CompressionMode.Decompress)))
        {
            int next = 0;
            while (reader.ReadLine() is { } line)
            {
                if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
                int sp = line.IndexOf(' ');
                int rank = sp < 0 ? next : int.Parse(line[(sp + 1)..], CultureInfo.InvariantCulture);
                _ranks.Add(ToByteChars(Convert.FromBase64String(sp < 0 ? line : line[..sp])), rank);
                next = rank + 1;
            }
        }
        _special = _tiktoken.SpecialTokens!.ToDictionary(kv => kv.Key, kv => kv.Value);

        // Merges from ranks. Two derivations for token t of rank r (2+ bytes):
        //  (1) "min-max": the split t = a + b, a and b in the vocabulary, with max(rank a, rank b) smallest;
        //  (2) "tiktoken": run tiktoken's merge loop on t's bytes with only the ranks below r; it ends in two parts
        //      a, b (what transformers' TikTokenConverter does when it converts tiktoken files to tokenizer.json).
        // (2) is used; (1) is kept only to count how often they differ (see MergesDerivedFromRanks_...).
        _merges = [];
        foreach ((string t, int rank) in _ranks.OrderBy(kv => kv.Value))
        {
            if (t.Length < 2) continue;
            int best = -1, bestMax = int.MaxValue;
            for (int k = 1; k < t.Length; k++)
            {
                if (_ranks.TryGetValue(t[..k], out int ra) && _ranks.TryGetValue(t[k..], out int rb) && Math.Max(ra, rb) < bestMax)
                    (best, bestMax) = (k, Math.Max(ra, rb));
            }
            List<string> parts = TiktokenMerge(t, rank);
            if (parts.Count != 2) { _tokensWithoutSplit++; continue; }
            if (best != parts[0].Length) _minMaxDiffers++;
            _merges.Add((parts[0], parts[1]));
        }
        _tok = Create(Llama3Pattern, ignoreMerges: true);
    }

    private LlamaTokenizer Create(string pattern, bool ignoreMerges)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteStartArray("added_tokens");
            foreach ((string content, int id) in _special.OrderBy(kv => kv.Value))
            {
                w.WriteStartObject();
                w.WriteNumber("id", id);
                w.WriteString("content", content);
                w.WriteBoolean("single_word", false);
                w.WriteBoolean("lstrip", false);
                w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false);
                w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WritePropertyName("pre_tokenizer");
            w.WriteRawValue($$"""
                {"type":"Sequence","pretokenizers":[
                  {"type":"Split","pattern":{"Regex":{{JsonSerializer.Serialize(pattern)}}},"behavior":"Isolated","invert":false},
                  {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]}
                """);
            w.WritePropertyName("post_processor");
            w.WriteRawValue("""{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true}""");
            w.WritePropertyName("decoder");
            w.WriteRawValue("""{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}""");
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout");
            w.WriteNull("unk_token");
            w.WriteNull("continuing_subword_prefix");
            w.WriteNull("end_of_word_suffix");
            w.WriteBoolean("fuse_unk", false);
            w.WriteBoolean("byte_fallback", false);
            w.WriteBoolean("ignore_merges", ignoreMerges);
            w.WriteStartObject("vocab");
            foreach ((string piece, int id) in _ranks) w.WriteNumber(piece, id);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach ((string a, string b) in _merges) w.WriteStringValue(a + " " + b);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return LlamaTokenizer.Parse(Encoding.UTF8.GetString(ms.ToArray()), "cl100k/tokenizer.json");
    }

    /// <summary>GPT-2's bytes_to_unicode, written out here independently of the code under test.</summary>
    private static readonly char[] Gpt2ByteChars = Enumerable.Range(0, 256).Select(b =>
        b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174
            ? (char)b
            : (char)(256 + Enumerable.Range(0, b).Count(x => !(x is >= 33 and <= 126 or >= 161 and <= 172 or >= 174)))).ToArray();

    internal static string ToByteChars(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(Gpt2ByteChars[b]);
        return sb.ToString();
    }

    /// <summary>tiktoken's algorithm on one pre-token: whole-piece lookup, else <see cref="TiktokenMerge"/>.</summary>
    private List<int> TiktokenPiece(string piece)
    {
        string chars = ToByteChars(Encoding.UTF8.GetBytes(piece));
        if (_ranks.TryGetValue(chars, out int whole)) return [whole];
        return TiktokenMerge(chars, int.MaxValue).ConvertAll(p => _ranks[p]);
    }

    /// <summary>tiktoken's merge loop on byte chars: repeatedly merge the adjacent pair whose concatenation has the lowest rank below <paramref name="maxRank"/> (leftmost on ties).</summary>
    private List<string> TiktokenMerge(string chars, int maxRank)
    {
        var parts = chars.Select(c => c.ToString()).ToList();
        while (parts.Count > 1)
        {
            int bestI = -1, bestRank = maxRank;
            for (int i = 0; i + 1 < parts.Count; i++)
                if (_ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank) (bestI, bestRank) = (i, r);
            if (bestI < 0) break;
            parts[bestI] += parts[bestI + 1];
            parts.RemoveAt(bestI + 1);
        }
        return parts;
    }

    internal static readonly string[] Strings =
    [
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "I'm sure you'll love it; they've said we'd go. It's HE'S, YOU'RE, I'M, WE'LL, THEY'VE, SHE'D.",
        "don't won't can't shouldn't",
        "public static int Main(string[] args) { return args.Length > 0 ? 1 : 0; }",
        "def f(x):\n    return x ** 2  # square\n\n\nprint(f(3))\n",
        "for (int i = 0; i < n; i++) {\n\tsum += a[i] * b[i];\n}",
        "12345678901234567890 3.14159 -42 1e-10 0x1F 1,000,000 2024-06-01",
        "   leading spaces",
        "trailing spaces   ",
        "a  b   c    d\t\te\n\nf\r\ng \n h",
        "\n\n\n",
        "   ",
        " ",
        "",
        "\t \n \r\n",
        "naïve café résumé Ångström",
        "日本語のテキストと中文文本，还有한국어 텍스트.",
        "Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم",
        "e\u0301 a\u0308 combining: n\u0303o\u0308",
        "«quotes» “smart” ‘single’ — en–dash … ellipsis",
        "¡¿Qué?! ½ ¼ ² ³ µ ° ± × ÷",
        "The user is a male. His job is programmer. His age is 25.\nHe watched the following movies in order in the past, and rated them:\n" +
        "['0. True Romance (1993) (4 stars)', '1. Desperado (1995) (5 stars)', '2. Shawshank Redemption, The (1994) (1 star)']\n" +
        "Based on the movies he has watched, deduce if he will like the movie ***Toy Story (1995)***.\n" +
        "Note that more stars the user rated the movie, the more the user liked the movie.\nYou should ONLY tell me yes or no.",
        "A chat between a curious user and an artificial intelligence assistant. USER: Hi ASSISTANT:",
        "Cinema Paradiso (Nuovo cinema Paradiso) (1988) (3.5 stars)",
        "'s 's 'S 'll 'LL 'Ve x'd",
        "!!!??? ... --- ___ *** ### $$$ %%% &&& ((())) [[[]]]",
        "a\u00A0b\u2003c\u3000d", // no-break, em and ideographic spaces
        "\u200Bzero\u200Dwidth\uFEFF",
    ];

    [Test]
    public void MergesDerivedFromRanks_CoverEveryMultiByteToken()
    {
        Assert.That(_tokensWithoutSplit, Is.Zero, "tiktoken's loop on every cl100k token of 2+ bytes, with the lower ranks only, ends in two parts");
        TestContext.Out.WriteLine($"min-max split differs from the tiktoken-derived merge for {_minMaxDiffers} of {_merges.Count} tokens");
        Assert.That(_ranks, Has.Count.EqualTo(100256));
        Assert.That(_merges, Has.Count.EqualTo(100256 - 256));
    }

    [TestCaseSource(nameof(Strings))]
    public void Encode_EqualsTiktoken(string text)
    {
        IReadOnlyList<int> expected = _tiktoken.EncodeToIds(text);
        Assert.That(_tok.Encode(text, addSpecialTokens: false), Is.EqualTo(expected));
        Assert.That(_tok.Encode(text), Is.EqualTo(expected), "ByteLevel post-processor adds no tokens");
        Assert.That(_tok.Decode(expected), Is.EqualTo(text), "decode round trip");
    }

    [Test]
    public void Encode_EqualsTiktoken_OnRandomText()
    {
        // Seeded random strings over a pool of ASCII, whitespace, punctuation, Latin-1, Greek, CJK and combining marks
        // (BMP only: see Encode_SupplementaryCodePoints for the rest).
        int mismatches = 0;
        var firstMismatch = "";
        foreach (string text in RandomStrings(1234, 2000))
        {
            IReadOnlyList<int> expected = _tiktoken.EncodeToIds(text);
            if (!_tok.Encode(text, addSpecialTokens: false).SequenceEqual(expected))
            {
                if (mismatches++ == 0) firstMismatch = text;
            }
            else Assert.That(_tok.Decode(expected), Is.EqualTo(text));
        }
        Assert.That(mismatches, Is.Zero, $"first mismatch: \"{firstMismatch}\"");
    }

    private static IEnumerable<string> RandomStrings(int seed, int count)
    {
        const string pool = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789      \t\n\r'\"!?.,;:-_()[]{}<>/\\@#$%^&*+=~`|" +
                            "éèàçñöüßøÅ αβγΔΩ 中文字日本語한국 \u0301\u0308\u00A0\u2003…—“”’";
        var rng = new Random(seed);
        for (int n = 0; n < count; n++)
        {
            int len = rng.Next(0, 60);
            var sb = new StringBuilder(len);
            for (int i = 0; i < len; i++) sb.Append(pool[rng.Next(pool.Length)]);
            yield return sb.ToString();
        }
    }

    [Test]
    public void Encode_MovieLensPrompts_EqualTiktoken()
    {
        string path = TestData.RequireShared("movielens/ml-100k/u.item");
        string[] titles = [.. File.ReadLines(path, Encoding.Latin1).Select(l => l.Split('|')[1]).Where(t => t.Length > 0)];
        Assert.That(titles, Has.Length.GreaterThan(1000));
        var rng = new Random(7);
        for (int n = 0; n < 50; n++)
        {
            var hist = Enumerable.Range(0, 20).Select(i => $"'{i}. {titles[rng.Next(titles.Length)]} ({rng.Next(1, 6)} star{(rng.Next(2) == 0 ? "" : "s")})'");
            string prompt = "The user is a female. Her job is writer. Her age is 35.\nShe watched the following movies in order in the past, and rated them:\n" +
                            $"[{string.Join(", ", hist)}]\nBased on the movies she has watched, deduce if she will like the movie ***{titles[rng.Next(titles.Length)]}***.\n" +
                            "Note that more stars the user rated the movie, the more the user liked the movie.\nYou should ONLY tell me yes or no.";
            Assert.That(_tok.Encode(prompt), Is.EqualTo(_tiktoken.EncodeToIds(prompt)), prompt);
        }
    }

    [Test]
    public void Encode_SupplementaryCodePoints_FollowTheRegexPerCodePoint()
    {
        // Emoji and math letters are single code points above U+FFFF. Per code point (HF/Oniguruma and tiktoken),
        // "😀abc" is ONE pre-token ([^\r\n\p{L}\p{N}]? takes the emoji, \p{L}+ the letters) and "x𝐀y" is one \p{L}+ run.
        // Expected ids: the hand-split pieces through the tiktoken algorithm written in this file.
        (string Text, string[] Pieces)[] cases =
        [
            ("😀abc", ["😀abc"]),
            ("x𝐀y 𝐁", ["x𝐀y", " 𝐁"]),
            ("I love 🍕 pizza 🎉🎉", ["I", " love", " 🍕", " pizza", " 🎉🎉"]),
            ("𠀀𠀁 ok", ["𠀀𠀁", " ok"]), // CJK extension B letters
            ("1𝟐34", ["1𝟐3", "4"]),    // U+1D7D0 is a digit (Nd): per code point "1𝟐3" is one \p{N}{1,3} run
        ];
        foreach ((string text, string[] pieces) in cases)
        {
            List<int> expected = [.. pieces.SelectMany(TiktokenPiece)];
            Assert.That(string.Concat(pieces), Is.EqualTo(text), "precondition: pieces cover the text");
            Assert.That(_tok.Encode(text, addSpecialTokens: false), Is.EqualTo(expected), text);
            Assert.That(_tok.Decode(expected), Is.EqualTo(text));
            if (!_tiktoken.EncodeToIds(text).SequenceEqual(expected))
                TestContext.Out.WriteLine($"Microsoft.ML.Tokenizers' tiktoken (regex on UTF-16) differs on \"{text}\"");
        }
    }

    [Test]
    public void TiktokenReference_AgreesWithMicrosoftMlTokenizers()
    {
        // The reference used above is itself checked: on single pre-tokens it equals Microsoft.ML.Tokenizers.
        foreach (string piece in new[] { "Hello", " world", " unbelievable", " Paradiso", "123", " Ångström", "日本語", "\n\n" })
            Assert.That(TiktokenPiece(piece), Is.EqualTo(_tiktoken.EncodeToIds(piece)), piece);
    }

    [Test]
    public void PossessivePattern_GivesTheSameIds()
    {
        LlamaTokenizer possessive = Create(TiktokenPossessivePattern, ignoreMerges: true);
        foreach (string s in Strings)
            Assert.That(possessive.Encode(s), Is.EqualTo(_tiktoken.EncodeToIds(s)), s);
    }

    [Test]
    public void WithoutIgnoreMerges_BpeReachesTheSameTokens()
    {
        // With ignore_merges false every piece goes through the merge loop (Microsoft.ML.Tokenizers' BpeTokenizer).
        // If the merges derived from the ranks are right, BPE ends on the same tokens as tiktoken's lookup.
        LlamaTokenizer bpe = Create(Llama3Pattern, ignoreMerges: false);
        foreach (string s in Strings)
            Assert.That(bpe.Encode(s), Is.EqualTo(_tiktoken.EncodeToIds(s)), s);
        int mismatches = 0;
        foreach (string s in RandomStrings(99, 2000))
            if (!bpe.Encode(s).SequenceEqual(_tiktoken.EncodeToIds(s))) mismatches++;
        Assert.That(mismatches, Is.Zero, "random strings where the merge loop differs from tiktoken");
    }

    [Test]
    public void SpecialTokens_AreSplitOutAndDecoded()
    {
        int eot = _special["<|endoftext|>"];
        Assert.That(_tok.TokenToId("<|endoftext|>"), Is.EqualTo(eot));
        IReadOnlyList<int> ids = _tok.Encode("Hi<|endoftext|> there");
        List<int> expected = [.. _tiktoken.EncodeToIds("Hi"), eot, .. _tiktoken.EncodeToIds(" there")];
        Assert.That(ids, Is.EqualTo(expected));
        Assert.That(_tok.Decode(ids), Is.EqualTo("Hi there"));
        Assert.That(_tok.Decode(ids, skipSpecialTokens: false), Is.EqualTo("Hi<|endoftext|> there"));
        Assert.That(_tok.BosId, Is.Null);
        Assert.That(_tok.PrefixIds, Is.Empty);
    }

    [Test]
    public void Decode_InvalidUtf8_IsReplacementCharacter()
    {
        // "€" = E2 82 AC; the byte tokens alone decode to one U+FFFD per maximal invalid sequence (from_utf8_lossy).
        int e2 = _ranks[ToByteChars([0xE2])], x82 = _ranks[ToByteChars([0x82])], ac = _ranks[ToByteChars([0xAC])];
        Assert.That(_tok.Decode([e2, x82, ac]), Is.EqualTo("€"));
        Assert.That(_tok.Decode([e2, x82]), Is.EqualTo("\uFFFD"));
        Assert.That(_tok.Decode([ac, _ranks["a"]]), Is.EqualTo("\uFFFDa"));
    }

    [Test]
    public void EncodeWithMarkers_PiecesArePreTokenizedIndependently()
    {
        string[] markers = ["[hist]", "[target]"];
        // Plain text: "(4 stars)[hist], '1." would let the regex take ")[" together; with markers, the pieces
        // "…(4 stars)" and ", '1. Up (2009)" are encoded on their own.
        string text = "'0. Toy Story (1995) (4 stars)[hist], '1. Up (2009) (5 stars)[hist]'] ***Heat (1995)***[target].";
        int[] ids = _tok.EncodeWithMarkers(text, markers);
        List<int> expected =
        [
            .. _tiktoken.EncodeToIds("'0. Toy Story (1995) (4 stars)"), -1,
            .. _tiktoken.EncodeToIds(", '1. Up (2009) (5 stars)"), -1,
            .. _tiktoken.EncodeToIds("'] ***Heat (1995)***"), -2,
            .. _tiktoken.EncodeToIds("."),
        ];
        Assert.That(ids, Is.EqualTo(expected));
        Assert.That(_tok.EncodeWithMarkers("no markers here", markers), Is.EqualTo(_tiktoken.EncodeToIds("no markers here")));
        Assert.That(_tok.EncodeWithMarkers("[hist][hist]<|endoftext|>[target]", markers),
            Is.EqualTo(new[] { -1, -1, _special["<|endoftext|>"], -2 }));
    }
}
