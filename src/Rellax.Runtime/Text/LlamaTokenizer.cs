using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Rellax.Runtime;

/// <summary>
/// The BPE tokenizer of the Llama family, loaded from a Hugging Face <c>tokenizer.json</c> (and
/// <c>tokenizer_config.json</c> for <c>add_bos_token</c>/<c>add_eos_token</c>). One type serves both schemes:
/// SentencePiece-style BPE with byte fallback (Llama 2, Vicuna, Mistral, stories260K) and byte-level BPE with a
/// pre-tokenizer regex (GPT-2, Llama 3, Qwen2).
/// </summary>
/// <remarks>
/// <para>Pipeline, with the HF <c>tokenizers</c> semantics: added tokens (<c>added_tokens</c>, e.g. <c>&lt;s&gt;</c>)
/// are split out of the raw text first (leftmost-longest); each remaining segment is normalized
/// (<c>Prepend</c>/<c>Replace</c>, or the <c>Metaspace</c> pre-tokenizer), then BPE-encoded with the merge ranks
/// of <c>model.merges</c>; code points not in the vocabulary become byte tokens <c>&lt;0xNN&gt;</c>
/// (<c>byte_fallback</c>) or <c>unk</c>.</para>
/// <para>The merge loop is <see cref="BpeMerges"/> (HF's heap-based <c>merge_all</c>, O(n log n) in a word's length;
/// Microsoft.ML.Tokenizers' <c>BpeTokenizer</c>, used before, is quadratic on long words). Also implemented in this class,
/// because Microsoft.ML.Tokenizers cannot express them: reading <c>tokenizer.json</c> (it has no loader); SentencePiece byte fallback
/// (its BPE only knows an unknown token, so runs of in-vocabulary code points are handed to it and the code
/// points outside the vocabulary become byte tokens here, which is exact because no merge can involve a symbol
/// that is not in the vocabulary); HF added-token splitting; the Prepend/Replace/Metaspace normalization; the
/// post-processor template; and decoding (its decoder has no ByteFallback/Fuse/Strip chain).</para>
/// <para>Byte-level BPE (a <c>ByteLevel</c> pre-tokenizer, alone or last in a <c>Sequence</c> after <c>Split</c> regex
/// pre-tokenizers): each segment between added tokens is normalized (<c>NFC</c>/<c>NFD</c>, see <see cref="UnicodeNormalization"/>), split by the <c>Split</c> regexes
/// (see <see cref="PreTokenizerRegex"/> for how their Oniguruma syntax runs on .NET), optionally prefixed with a space
/// and split by GPT-2's regex (<c>add_prefix_space</c>, <c>use_regex</c>), written as GPT-2 byte chars
/// (<see cref="ByteLevelMap"/>), and each piece is BPE-encoded by the same merge loop; <c>ignore_merges</c> (Llama 3)
/// takes a piece that is itself in the vocabulary whole. The <c>ByteLevel</c> decoder maps the chars back to bytes.</para>
/// <para>How exact the byte-level path is (tests/Rellax.Tests/Runtime/LlamaTokenizerCl100kTests.cs): a Llama-3-style
/// tokenizer.json built from the cl100k ranks gives the same ids as Microsoft.ML.Tokenizers' tiktoken on fixed, random and
/// MovieLens text, with <c>ignore_merges</c> and without it (so the merge loop is exact there too), except
/// where that implementation runs its regex on UTF-16 chars and a code point above U+FFFF is a letter or digit (there
/// this class follows the per-code-point semantics of HF and tiktoken).</para>
/// <para>Not supported (rejected at load with a message naming the field): WordPiece/Unigram models, regex Replace
/// normalizers, NFKC/NFKD and other normalizers, pre-tokenizers other than Metaspace / Split + ByteLevel, other decoders
/// and post-processors; <c>single_word</c> added tokens are matched like ordinary ones.</para>
/// Instances are immutable and thread-safe.
/// </remarks>
public sealed class LlamaTokenizer
{
    private readonly BpeMerges _bpe;
    private readonly Dictionary<string, int> _vocab;          // model.vocab + added tokens
    private readonly Dictionary<string, int> _modelVocab;     // model.vocab only
    private readonly Dictionary<int, string> _idToToken;
    private readonly AddedToken[] _added;                     // longest first
    private readonly HashSet<int> _specialIds;
    private readonly HashSet<char> _addedFirstChars;
    private readonly NormStep[] _normalizer;
    private readonly MetaspaceOptions? _metaspace;
    private readonly PreTokenizerSpec _preTok;
    private readonly DecodeStep[] _decoder;
    private readonly int[] _prefix;
    private readonly int[] _suffix;
    private readonly int[]? _byteIds;                         // 256 ids of <0xNN> when byte_fallback
    private readonly int? _unkId;
    private readonly bool _fuseUnk;
    private readonly bool _ignoreMerges;

    private sealed record AddedToken(string Content, int Id, bool Special, bool LStrip, bool RStrip);
    private sealed record NormStep(string? Prepend, string? From, string? To, NormalizationForm? Form = null);
    private sealed record MetaspaceOptions(string Replacement, string PrependScheme, bool Split);
    private sealed record SplitStep(PreTokenizerRegex Pattern, string Behavior, bool Invert);
    private sealed record ByteLevelOptions(bool AddPrefixSpace, bool UseRegex);

    /// <summary>The pre-tokenizer: a Metaspace (SentencePiece style), or Split steps then ByteLevel (byte-level BPE), or nothing.</summary>
    private sealed record PreTokenizerSpec(MetaspaceOptions? Metaspace, SplitStep[] Splits, ByteLevelOptions? ByteLevel);

    private static readonly PreTokenizerRegex Gpt2Regex = new(PreTokenizerRegex.Gpt2Pattern);
    private sealed record DecodeStep(string Kind, string? From = null, string? To = null, int Start = 0, int Stop = 0, string? Scheme = null);

    private LlamaTokenizer(BpeMerges bpe, Dictionary<string, int> modelVocab, Dictionary<string, int> vocab, Dictionary<int, string> idToToken, AddedToken[] added,
        NormStep[] normalizer, PreTokenizerSpec preTok, DecodeStep[] decoder, int[] prefix, int[] suffix,
        int[]? byteIds, int? unkId, bool fuseUnk, bool ignoreMerges, int? bosId, int? eosId)
    {
        _bpe = bpe;
        _modelVocab = modelVocab;
        _vocab = vocab;
        _idToToken = idToToken;
        _added = added;
        _specialIds = [.. added.Where(a => a.Special).Select(a => a.Id)];
        _addedFirstChars = [.. added.Select(a => a.Content[0])];
        _normalizer = normalizer;
        _preTok = preTok;
        _metaspace = preTok.Metaspace;
        _decoder = decoder;
        _prefix = prefix;
        _suffix = suffix;
        _byteIds = byteIds;
        _unkId = unkId;
        _fuseUnk = fuseUnk;
        _ignoreMerges = ignoreMerges;
        BosId = bosId;
        EosId = eosId;
        VocabSize = idToToken.Count == 0 ? 0 : idToToken.Keys.Max() + 1;
        MaxPieceChars = Math.Max(2, modelVocab.Count == 0 ? 0 : modelVocab.Keys.Max(k => k.Length));
    }

    /// <summary>Number of ids: largest id in the vocabulary or added tokens, plus one.</summary>
    public int VocabSize { get; }

    /// <summary>Begin-of-sequence id (tokenizer_config <c>bos_token</c>, else the template's leading special token, else <c>&lt;s&gt;</c>).</summary>
    public int? BosId { get; }

    /// <summary>End-of-sequence id (tokenizer_config <c>eos_token</c>, else <c>&lt;/s&gt;</c>).</summary>
    public int? EosId { get; }

    /// <summary>Ids added before the text when <c>addSpecialTokens</c> is true (e.g. [BOS]).</summary>
    public IReadOnlyList<int> PrefixIds => _prefix;

    /// <summary>Ids added after the text when <c>addSpecialTokens</c> is true (e.g. [] or [EOS]).</summary>
    public IReadOnlyList<int> SuffixIds => _suffix;

    /// <summary>Loads <c>tokenizer.json</c> (required) and <c>tokenizer_config.json</c> (optional) from a model directory.</summary>
    /// <param name="modelDirectory">The Hugging Face model directory.</param>
    /// <exception cref="FileNotFoundException"><c>tokenizer.json</c> is absent.</exception>
    /// <exception cref="InvalidDataException">A file is not valid JSON or a field is missing or malformed; the message names file and field.</exception>
    /// <exception cref="NotSupportedException">A model type, normalizer, pre-tokenizer, decoder or post-processor this class does not implement.</exception>
    public static LlamaTokenizer Load(string modelDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDirectory);
        string dir = Path.GetFullPath(modelDirectory);
        string tokPath = Path.Combine(dir, "tokenizer.json");
        if (!File.Exists(tokPath))
            throw new FileNotFoundException($"Tokenizer not found: '{tokPath}' (only HF tokenizer.json is supported).", tokPath);
        string cfgPath = Path.Combine(dir, "tokenizer_config.json");
        string? cfgJson = File.Exists(cfgPath) ? InputPaths.ReadAllText(cfgPath, "tokenizer config", InputPaths.MaxConfigBytes) : null;
        return Parse(InputPaths.ReadAllText(tokPath, "tokenizer", InputPaths.MaxTokenizerBytes), tokPath, cfgJson, cfgPath);
    }

    /// <summary>Builds a tokenizer from <c>tokenizer.json</c> text and optional <c>tokenizer_config.json</c> text.</summary>
    /// <param name="tokenizerJson">Contents of tokenizer.json.</param>
    /// <param name="tokenizerSource">Name for messages (usually its path).</param>
    /// <param name="configJson">Contents of tokenizer_config.json, or <see langword="null"/>.</param>
    /// <param name="configSource">Name for messages.</param>
    /// <exception cref="InvalidDataException">Malformed JSON or fields.</exception>
    /// <exception cref="NotSupportedException">Unsupported components.</exception>
    public static LlamaTokenizer Parse(string tokenizerJson, string tokenizerSource, string? configJson = null, string configSource = "tokenizer_config.json")
    {
        using JsonDocument doc = ParseJson(tokenizerJson, tokenizerSource);
        JsonElement root = doc.RootElement;
        string src = tokenizerSource;

        // ---- model ----
        JsonElement model = Prop(root, "model", src) is { ValueKind: JsonValueKind.Object } m ? m : throw Bad(src, "model", "must be an object.");
        string type = model.TryGetProperty("type", out JsonElement t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
        if (type != "BPE")
            throw new NotSupportedException($"Tokenizer '{src}', field 'model.type': '{type}' is not supported (only \"BPE\", SentencePiece-style or byte-level).");
        if (OptString(model, "continuing_subword_prefix", src) is { Length: > 0 } || OptString(model, "end_of_word_suffix", src) is { Length: > 0 })
            throw new NotSupportedException($"Tokenizer '{src}': model.continuing_subword_prefix / end_of_word_suffix are not supported.");
        if (model.TryGetProperty("dropout", out JsonElement dr) && dr.ValueKind == JsonValueKind.Number && dr.GetDouble() != 0)
            throw new NotSupportedException($"Tokenizer '{src}', field 'model.dropout': BPE dropout is not supported for inference.");
        bool byteFallback = OptBool(model, "byte_fallback", src) ?? false;
        bool fuseUnk = OptBool(model, "fuse_unk", src) ?? false;
        bool ignoreMerges = OptBool(model, "ignore_merges", src) ?? false;
        string? unkToken = OptString(model, "unk_token", src);

        JsonElement vocabEl = Prop(model, "vocab", src);
        if (vocabEl.ValueKind != JsonValueKind.Object) throw Bad(src, "model.vocab", "must be an object {piece: id}.");
        var modelVocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty p in vocabEl.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw Bad(src, "model.vocab", $"id of '{p.Name}' must be a non-negative integer.");
            if (!modelVocab.TryAdd(p.Name, id)) throw Bad(src, "model.vocab", $"piece '{p.Name}' appears twice.");
        }

        JsonElement mergesEl = Prop(model, "merges", src);
        if (mergesEl.ValueKind != JsonValueKind.Array) throw Bad(src, "model.merges", "must be an array.");
        var merges = new List<(int, int, int)>(mergesEl.GetArrayLength());
        int mi = 0;
        foreach (JsonElement me in mergesEl.EnumerateArray())
        {
            string a, b;
            if (me.ValueKind == JsonValueKind.String)
            {
                string s = me.GetString()!;
                int sp = s.IndexOf(' ');
                if (sp <= 0 || sp == s.Length - 1 || s.IndexOf(' ', sp + 1) >= 0)
                    throw Bad(src, $"model.merges[{mi}]", $"'{s}' must be two pieces separated by one space.");
                a = s[..sp]; b = s[(sp + 1)..];
            }
            else if (me.ValueKind == JsonValueKind.Array && me.GetArrayLength() == 2
                     && me[0].ValueKind == JsonValueKind.String && me[1].ValueKind == JsonValueKind.String)
            {
                a = me[0].GetString()!; b = me[1].GetString()!;
            }
            else throw Bad(src, $"model.merges[{mi}]", "must be \"a b\" or [\"a\", \"b\"].");
            if (!modelVocab.TryGetValue(a, out int aId) || !modelVocab.TryGetValue(b, out int bId) || !modelVocab.TryGetValue(a + b, out int abId))
                throw Bad(src, $"model.merges[{mi}]", $"'{a}' + '{b}' uses a piece that is not in model.vocab.");
            merges.Add((aId, bId, abId));
            mi++;
        }

        int? unkId = null;
        if (unkToken is not null)
            unkId = modelVocab.TryGetValue(unkToken, out int u) ? u : throw Bad(src, "model.unk_token", $"'{unkToken}' is not in model.vocab.");

        int[]? byteIds = null;
        if (byteFallback)
        {
            byteIds = new int[256];
            for (int i = 0; i < 256; i++)
                byteIds[i] = modelVocab.TryGetValue($"<0x{i:X2}>", out int bid) ? bid : -1;
        }

        // ---- added tokens ----
        var vocab = new Dictionary<string, int>(modelVocab, StringComparer.Ordinal);
        var added = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out JsonElement at) && at.ValueKind == JsonValueKind.Array)
        {
            int ai = 0;
            foreach (JsonElement a in at.EnumerateArray())
            {
                string field = $"added_tokens[{ai++}]";
                if (a.ValueKind != JsonValueKind.Object) throw Bad(src, field, "must be an object.");
                string content = OptString(a, "content", src) ?? throw Bad(src, field + ".content", "missing.");
                if (content.Length == 0) throw Bad(src, field + ".content", "must not be empty.");
                if (!a.TryGetProperty("id", out JsonElement idEl) || !idEl.TryGetInt32(out int id) || id < 0)
                    throw Bad(src, field + ".id", "must be a non-negative integer.");
                // single_word is not implemented (no Llama-family tokenizer sets it); normalized=true tokens are matched
                // on the raw text like normalized=false ones, which is the same for tokens without spaces.
                added.Add(new AddedToken(content, id, OptBool(a, "special", src) ?? false, OptBool(a, "lstrip", src) ?? false, OptBool(a, "rstrip", src) ?? false));
                vocab[content] = id;
            }
        }
        var idToToken = new Dictionary<int, string>();
        foreach ((string piece, int id) in modelVocab) idToToken.TryAdd(id, piece);
        foreach (AddedToken a in added) idToToken[a.Id] = a.Content;

        // ---- normalizer / pre-tokenizer / decoder ----
        var norm = new List<NormStep>();
        if (root.TryGetProperty("normalizer", out JsonElement ne) && ne.ValueKind != JsonValueKind.Null)
            ReadNormalizer(ne, src, "normalizer", norm);
        var preTok = new PreTokenizerSpec(null, [], null);
        if (root.TryGetProperty("pre_tokenizer", out JsonElement pe) && pe.ValueKind != JsonValueKind.Null)
            preTok = ReadPreTokenizer(pe, src);
        var dec = new List<DecodeStep>();
        if (root.TryGetProperty("decoder", out JsonElement de) && de.ValueKind != JsonValueKind.Null)
            ReadDecoder(de, src, "decoder", dec);

        // ---- special-token ids and post-processing ----
        JsonDocument? cfgDoc = configJson is null ? null : ParseJson(configJson, configSource);
        try
        {
            JsonElement? cfg = cfgDoc?.RootElement;
            if (cfg is { ValueKind: not JsonValueKind.Object }) throw Bad(configSource, null, "must be a JSON object.");
            int? Lookup(string? token, string file, string field) =>
                token is null ? null : vocab.TryGetValue(token, out int id) ? id : throw Bad(file, field, $"token '{token}' is not in the vocabulary.");
            string? cfgBos = cfg is { } c1 ? TokenString(c1, "bos_token", configSource) : null;
            string? cfgEos = cfg is { } c2 ? TokenString(c2, "eos_token", configSource) : null;

            var (tplPrefix, tplSuffix) = ReadPostProcessor(root, src);
            int? bosId = Lookup(cfgBos, configSource, "bos_token") ?? (tplPrefix.Length == 1 ? (int?)tplPrefix[0] : null)
                         ?? (vocab.TryGetValue("<s>", out int b) ? b : null);
            int? eosId = Lookup(cfgEos, configSource, "eos_token") ?? (vocab.TryGetValue("</s>", out int e) ? e : null);

            int[] prefix = tplPrefix, suffix = tplSuffix;
            bool? addBos = cfg is { } c3 ? OptBool(c3, "add_bos_token", configSource) : null;
            bool? addEos = cfg is { } c4 ? OptBool(c4, "add_eos_token", configSource) : null;
            if (addBos is not null || addEos is not null)
            {
                // transformers' LlamaTokenizerFast rebuilds the template from these flags (update_post_processor).
                prefix = addBos ?? tplPrefix.Length > 0
                    ? [bosId ?? throw Bad(configSource, "add_bos_token", "is true but no BOS token is known.")] : [];
                suffix = addEos ?? tplSuffix.Length > 0
                    ? [eosId ?? throw Bad(configSource, "add_eos_token", "is true but no EOS token is known.")] : [];
            }

            var bpe = new BpeMerges(merges);
            return new LlamaTokenizer(bpe, modelVocab, vocab, idToToken, [.. added.OrderByDescending(a => a.Content.Length)],
                [.. norm], preTok, [.. dec], prefix, suffix, byteIds, unkId, fuseUnk, ignoreMerges, bosId, eosId);
        }
        finally
        {
            cfgDoc?.Dispose();
        }
    }

    // ------------------------------------------------------------------ encode

    /// <summary>
    /// Encodes <paramref name="text"/> to token ids. Added tokens written in the text (e.g. the literal
    /// <c>"&lt;s&gt;"</c> or <c>"&lt;|im_start|&gt;"</c>) become their ids whatever <paramref name="addSpecialTokens"/> says, as in HF.
    /// </summary>
    /// <param name="text">Any string (lone UTF-16 surrogates are encoded as U+FFFD).</param>
    /// <param name="addSpecialTokens">Add the post-processor's tokens (BOS for Llama) around the text.</param>
    /// <returns>Token ids in [0, <see cref="VocabSize"/>).</returns>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 2 + 4);
        if (addSpecialTokens) ids.AddRange(_prefix);
        EncodeSplitting(text, [], ids, Budget.None);
        if (addSpecialTokens) ids.AddRange(_suffix);
        return ids;
    }

    /// <summary>
    /// <see cref="EncodeWithMarkers"/> that gives up once the ids are certain to number more than <paramref name="maxTokens"/>
    /// (a model's context, say): before each piece of text is encoded, its length gives a lower bound on its tokens (a token
    /// covers at most <see cref="MaxPieceChars"/> characters), and encoding stops as soon as the ids so far plus that bound
    /// pass <paramref name="maxTokens"/>. The work is then bounded by about <paramref name="maxTokens"/> ×
    /// <see cref="MaxPieceChars"/> characters of BPE plus one linear pass of splitting and normalization, however long the
    /// text is.
    /// </summary>
    /// <param name="text">The text.</param>
    /// <param name="markers">Distinct, non-empty marker strings (see <see cref="EncodeWithMarkers"/>); may be empty.</param>
    /// <param name="maxTokens">The most ids accepted, markers and the post-processor's tokens included.</param>
    /// <param name="ids">The ids (as <see cref="EncodeWithMarkers"/> returns them) when they fit, else empty.</param>
    /// <param name="atLeast">When the text does not fit: a lower bound on the ids it needs (more than
    /// <paramref name="maxTokens"/>); when it fits, the number of ids.</param>
    /// <param name="addSpecialTokens">Add the post-processor's tokens (BOS for Llama) around the text.</param>
    /// <returns>False when the text needs more than <paramref name="maxTokens"/> ids.</returns>
    /// <exception cref="ArgumentException">A marker is null, empty or repeated, or <paramref name="maxTokens"/> is negative.</exception>
    public bool TryEncodeWithMarkers(string text, IReadOnlyList<string> markers, int maxTokens, out int[] ids, out long atLeast, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        CheckMarkers(markers);
        if (maxTokens < 0) throw new ArgumentException($"maxTokens must be >= 0, got {maxTokens}", nameof(maxTokens));
        var list = new List<int>(Math.Min(text.Length / 2, maxTokens) + 4);
        if (addSpecialTokens) list.AddRange(_prefix);
        int suffix = addSpecialTokens ? _suffix.Length : 0;
        var budget = new Budget(maxTokens - suffix);
        if (!EncodeSplitting(text, markers, list, budget) || list.Count > budget.Limit)
        {
            ids = [];
            atLeast = Math.Max(budget.Need, list.Count) + suffix;
            return false;
        }
        if (addSpecialTokens) list.AddRange(_suffix);
        ids = [.. list];
        atLeast = ids.Length;
        return true;
    }

    /// <summary>The most ids an encoding may produce, and, once it is certain to pass them, a lower bound on what it needs.</summary>
    private sealed class Budget(int limit)
    {
        /// <summary>No limit (plain encoding).</summary>
        public static readonly Budget None = new(int.MaxValue);

        public int Limit { get; } = limit;

        public long Need { get; private set; }

        /// <summary>Whether <paramref name="chars"/> more characters of normalized text could still fit after <paramref name="ids"/>.</summary>
        public bool MayFit(List<int> ids, long chars, int maxPieceChars)
        {
            if (Limit == int.MaxValue) return true;
            long need = ids.Count + (chars + maxPieceChars - 1) / maxPieceChars;
            if (need <= Limit) return true;
            Need = need;
            return false;
        }

        /// <summary>Whether the ids so far are still within the limit.</summary>
        public bool Within(List<int> ids)
        {
            if (ids.Count <= Limit) return true;
            Need = ids.Count;
            return false;
        }
    }

    /// <summary>The longest piece of the model's vocabulary, in UTF-16 characters (at least 2: a byte-fallback or unknown
    /// token stands for one code point): no token covers more characters of the normalized text.</summary>
    public int MaxPieceChars { get; }

    /// <summary>
    /// Encodes text in which the strings of <paramref name="markers"/> (e.g. SPA's <c>[hist]</c> and <c>[target]</c>) are
    /// slots rather than text: the text is split at them first, exactly as HF <c>tokenizers</c> splits added special
    /// tokens out of the input (one leftmost-longest pass over markers and added tokens together; at equal length a
    /// marker wins), and every piece between them is tokenized exactly as HF tokenizes text between two added special
    /// tokens. An occurrence of <c>markers[k]</c> yields the id <c>-(k + 1)</c> in the result. Without markers in the
    /// text the result equals <see cref="Encode"/>.
    /// </summary>
    /// <remarks>
    /// <para>What "the way HF tokenizes text between added tokens" means, per scheme:</para>
    /// <list type="bullet">
    /// <item>SentencePiece style, Llama 2 <c>legacy</c> form (normalizer <c>Prepend("▁")</c> + <c>Replace(" ", "▁")</c>): HF
    /// normalizes each piece on its own, so every non-empty piece, including the one right after a marker, starts with
    /// <c>▁</c>: <c>"(4 stars)[hist], 'Up'"</c> gives <c>…, [hist], ▁, …</c> (the <c>","</c> after the marker is encoded as
    /// <c>"▁,"</c>, not as the <c>","</c> that plain text would give). This is what the model saw in training when the
    /// markers were added special tokens of the HF tokenizer.</item>
    /// <item>SentencePiece style with a <c>Metaspace</c> pre-tokenizer: <c>prepend_scheme: "always"</c> prepends <c>▁</c>
    /// to every piece, as above; <c>"first"</c> only to the piece that starts at offset 0 of the whole text (HF tests
    /// <c>offsets_original().0 == 0</c>), so no piece after a marker gets it, and neither does the first piece when the
    /// text begins with a marker or an added token; <c>"never"</c> to none.</item>
    /// <item>Byte-level BPE: each piece is normalized and pre-tokenized on its own, so no regex split crosses a marker
    /// (<c>"a[hist] b"</c> gives <c>a</c>, slot, <c>Ġb</c>, never a piece spanning the marker). Nothing is prepended
    /// unless the <c>ByteLevel</c> pre-tokenizer has <c>add_prefix_space</c>, which HF applies to every piece.</item>
    /// </list>
    /// </remarks>
    /// <param name="text">The text.</param>
    /// <param name="markers">Distinct, non-empty marker strings (at most a few; order defines the slot ids).</param>
    /// <param name="addSpecialTokens">Add the post-processor's tokens (BOS for Llama) around the text.</param>
    /// <returns>Token ids in [0, <see cref="VocabSize"/>), and negative marker slots <c>-(k + 1)</c>.</returns>
    /// <exception cref="ArgumentException">A marker is null, empty or repeated.</exception>
    public int[] EncodeWithMarkers(string text, IReadOnlyList<string> markers, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        CheckMarkers(markers);
        var ids = new List<int>(text.Length / 2 + 4);
        if (addSpecialTokens) ids.AddRange(_prefix);
        EncodeSplitting(text, markers, ids, Budget.None);
        if (addSpecialTokens) ids.AddRange(_suffix);
        return [.. ids];
    }

    private static void CheckMarkers(IReadOnlyList<string> markers)
    {
        ArgumentNullException.ThrowIfNull(markers);
        for (int k = 0; k < markers.Count; k++)
        {
            if (string.IsNullOrEmpty(markers[k]))
                throw new ArgumentException($"Marker {k} is null or empty.", nameof(markers));
            for (int j = 0; j < k; j++)
                if (markers[j] == markers[k])
                    throw new ArgumentException($"Marker {k} ('{markers[k]}') repeats marker {j}.", nameof(markers));
        }
    }

    /// <summary>
    /// Splits <paramref name="text"/> at markers and added tokens (leftmost-longest) and encodes the pieces between them;
    /// false (with <paramref name="ids"/> incomplete) as soon as the ids are certain to pass the budget.
    /// </summary>
    private bool EncodeSplitting(string text, IReadOnlyList<string> markers, List<int> ids, Budget budget)
    {
        int pos = 0;
        while (true)
        {
            (int start, int end, int id) = FindSplit(text, pos, markers);
            if (start < 0) return EncodeSegment(text.AsSpan(pos), pos, ids, budget);
            if (!EncodeSegment(text.AsSpan(pos, start - pos), pos, ids, budget)) return false;
            ids.Add(id);
            if (!budget.Within(ids)) return false;
            pos = end;
        }
    }

    /// <summary>
    /// Leftmost-longest marker or added token at or after <paramref name="from"/>: its range (including the whitespace
    /// an added token's lstrip/rstrip takes) and id (<c>-(k + 1)</c> for marker k); start = -1 when there is none.
    /// </summary>
    private (int Start, int End, int Id) FindSplit(string text, int from, IReadOnlyList<string> markers)
    {
        if (_added.Length == 0 && markers.Count == 0) return (-1, 0, 0);
        for (int i = from; i < text.Length; i++)
        {
            char c = text[i];
            if (!_addedFirstChars.Contains(c))
            {
                bool any = false;
                for (int k = 0; k < markers.Count && !any; k++) any = markers[k][0] == c;
                if (!any) continue;
            }
            int bestMarker = -1;
            for (int k = 0; k < markers.Count; k++)
            {
                string m = markers[k];
                if (i + m.Length <= text.Length && string.CompareOrdinal(text, i, m, 0, m.Length) == 0
                    && (bestMarker < 0 || m.Length > markers[bestMarker].Length))
                    bestMarker = k;
            }
            AddedToken? tok = null;
            foreach (AddedToken a in _added) // longest first
            {
                if (i + a.Content.Length > text.Length || string.CompareOrdinal(text, i, a.Content, 0, a.Content.Length) != 0) continue;
                tok = a;
                break;
            }
            if (bestMarker >= 0 && (tok is null || markers[bestMarker].Length >= tok.Content.Length))
                return (i, i + markers[bestMarker].Length, -(bestMarker + 1));
            if (tok is not null)
            {
                int s = i, e = i + tok.Content.Length;
                if (tok.LStrip) while (s > from && char.IsWhiteSpace(text[s - 1])) s--;
                if (tok.RStrip) while (e < text.Length && char.IsWhiteSpace(text[e])) e++;
                return (s, e, tok.Id);
            }
        }
        return (-1, 0, 0);
    }

    /// <summary>Encodes one segment of text between added tokens/markers; <paramref name="offset"/> is its start in the whole text.</summary>
    private bool EncodeSegment(ReadOnlySpan<char> segment, int offset, List<int> ids, Budget budget)
    {
        if (segment.IsEmpty) return true;
        string s = segment.ToString();
        foreach (NormStep n in _normalizer)
        {
            if (n.Form is { } form) s = UnicodeNormalization.Normalize(WellFormed(s), compose: form == NormalizationForm.FormC);
            else if (n.Prepend is not null) s = s.Length == 0 ? s : n.Prepend + s;
            else s = s.Replace(n.From!, n.To, StringComparison.Ordinal);
        }
        if (s.Length == 0) return true;
        if (!budget.MayFit(ids, s.Length, MaxPieceChars)) return false;
        if (_preTok.ByteLevel is { } bl) return EncodeByteLevel(WellFormed(s), bl, ids, budget);
        if (_metaspace is not { } ms) { EncodeWord(s, ids); return budget.Within(ids); }

        s = s.Replace(" ", ms.Replacement, StringComparison.Ordinal);
        // HF "first": only the split that starts at offset 0 of the original input (offsets_original().0 == 0).
        bool prepend = ms.PrependScheme == "always" || (ms.PrependScheme == "first" && offset == 0);
        if (prepend && !s.StartsWith(ms.Replacement, StringComparison.Ordinal)) s = ms.Replacement + s;
        if (!ms.Split) { EncodeWord(s, ids); return budget.Within(ids); }
        // Split before every replacement character (HF SplitDelimiterBehavior::MergedWithNext).
        int start = 0;
        for (int i = 1; i <= s.Length; i++)
        {
            if (i == s.Length || string.CompareOrdinal(s, i, ms.Replacement, 0, ms.Replacement.Length) == 0)
            {
                EncodeWord(s[start..i], ids);
                if (!budget.Within(ids)) return false;
                start = i;
            }
        }
        return true;
    }

    /// <summary>Byte-level path for one normalized segment: Split regexes, ByteLevel (prefix space, GPT-2 regex), byte chars, BPE.</summary>
    private bool EncodeByteLevel(string s, ByteLevelOptions bl, List<int> ids, Budget budget)
    {
        List<string> pieces = [s];
        foreach (SplitStep step in _preTok.Splits)
        {
            var next = new List<string>(pieces.Count * 4);
            foreach (string p in pieces) SplitPiece(p, step, next);
            pieces = next;
        }
        foreach (string p0 in pieces)
        {
            string p = bl.AddPrefixSpace && !p0.StartsWith(' ') ? " " + p0 : p0;
            if (!bl.UseRegex) EncodeWord(ByteLevelMap.Encode(p), ids);
            else
                foreach ((int a, int b) in IsolatedPieces(p, Gpt2Regex.Matches(p)))
                {
                    EncodeWord(ByteLevelMap.Encode(p[a..b]), ids);
                    if (!budget.Within(ids)) return false;
                }
            if (!budget.Within(ids)) return false;
        }
        return true;
    }

    /// <summary>The pieces of <paramref name="s"/> when its matches are kept as pieces of their own (HF <c>Isolated</c>).</summary>
    private static IEnumerable<(int Start, int End)> IsolatedPieces(string s, List<(int Start, int End)> matches)
    {
        int prev = 0;
        foreach ((int a, int b) in matches)
        {
            if (a > prev) yield return (prev, a);
            yield return (a, b);
            prev = b;
        }
        if (prev < s.Length) yield return (prev, s.Length);
    }

    /// <summary>HF <c>Split</c> pre-tokenizer on one piece (behaviors as in HF's <c>NormalizedString::split</c>); empty pieces are dropped.</summary>
    private static void SplitPiece(string s, SplitStep step, List<string> output)
    {
        // (range, isDelimiter) over the whole piece, as HF's Pattern::find_matches (inverted when invert is set).
        var parts = new List<(int Start, int End, bool Delim)>();
        int prev = 0;
        foreach ((int a, int b) in step.Pattern.Matches(s))
        {
            if (a > prev) parts.Add((prev, a, step.Invert));
            parts.Add((a, b, !step.Invert));
            prev = b;
        }
        if (prev < s.Length) parts.Add((prev, s.Length, step.Invert));

        var merged = new List<(int Start, int End)>();
        bool previousDelim = false;
        switch (step.Behavior)
        {
            case "Removed":
                foreach (var (a, b, d) in parts) if (!d) merged.Add((a, b));
                break;
            case "Isolated":
                foreach (var (a, b, _) in parts) merged.Add((a, b));
                break;
            case "MergedWithPrevious":
                foreach (var (a, b, d) in parts)
                {
                    if (d && !previousDelim && merged.Count > 0) merged[^1] = (merged[^1].Start, b);
                    else merged.Add((a, b));
                    previousDelim = d;
                }
                break;
            case "MergedWithNext":
                for (int k = parts.Count - 1; k >= 0; k--)
                {
                    var (a, b, d) = parts[k];
                    if (d && !previousDelim && merged.Count > 0) merged[^1] = (a, merged[^1].End);
                    else merged.Add((a, b));
                    previousDelim = d;
                }
                merged.Reverse();
                break;
            case "Contiguous":
                foreach (var (a, b, d) in parts)
                {
                    if (d == previousDelim && merged.Count > 0) merged[^1] = (merged[^1].Start, b);
                    else merged.Add((a, b));
                    previousDelim = d;
                }
                break;
            default:
                throw new InvalidOperationException($"Unknown split behavior '{step.Behavior}'.");
        }
        foreach ((int a, int b) in merged)
            if (b > a) output.Add(s[a..b]);
    }

    /// <summary><paramref name="s"/> with every lone surrogate replaced by U+FFFD (what UTF-8 encoding would do).</summary>
    private static string WellFormed(string s)
    {
        int bad = -1;
        for (int i = 0; i < s.Length && bad < 0; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i])) bad = i;
        }
        if (bad < 0) return s;
        var sb = new StringBuilder(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) { sb.Append(s, i, 2); i++; }
            else sb.Append(char.IsSurrogate(s[i]) ? '\uFFFD' : s[i]);
        }
        return sb.ToString();
    }

    /// <summary>BPE on one pre-token. Runs of in-vocabulary code points go to the merge loop (<see cref="BpeMerges"/>); others are byte-fallback or unk.</summary>
    private void EncodeWord(string word, List<int> ids)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _modelVocab.TryGetValue(word, out int whole))
        {
            ids.Add(whole);
            return;
        }
        // Runs of in-vocabulary code points are merged by BPE; no merge can involve a symbol outside the vocabulary.
        var pieces = _modelVocab.GetAlternateLookup<ReadOnlySpan<char>>();
        int[] run = System.Buffers.ArrayPool<int>.Shared.Rent(word.Length);
        try
        {
            int count = 0;
            bool lastWasUnk = false;
            Span<byte> utf8 = stackalloc byte[4];
            int i = 0;
            while (i < word.Length)
            {
                System.Text.Rune.DecodeFromUtf16(word.AsSpan(i), out System.Text.Rune rune, out int used);
                if (pieces.TryGetValue(word.AsSpan(i, used), out int piece))
                {
                    run[count++] = piece;
                    lastWasUnk = false;
                }
                else
                {
                    _bpe.Merge(run.AsSpan(0, count), ids);
                    count = 0;
                    int n = rune.EncodeToUtf8(utf8);
                    bool allBytes = _byteIds is not null;
                    for (int k = 0; k < n && allBytes; k++) allBytes = _byteIds![utf8[k]] >= 0;
                    if (allBytes)
                    {
                        for (int k = 0; k < n; k++) ids.Add(_byteIds![utf8[k]]);
                        lastWasUnk = false;
                    }
                    else
                    {
                        if (_unkId is not int unk)
                            throw new InvalidOperationException($"Character U+{rune.Value:X4} is not in the vocabulary and the tokenizer has neither byte fallback nor an unk_token.");
                        if (!(_fuseUnk && lastWasUnk)) ids.Add(unk);
                        lastWasUnk = true;
                    }
                }
                i += used;
            }
            _bpe.Merge(run.AsSpan(0, count), ids);
        }
        finally
        {
            System.Buffers.ArrayPool<int>.Shared.Return(run);
        }
    }

    // ------------------------------------------------------------------ decode

    /// <summary>
    /// Decodes ids to text with the tokenizer.json decoder chain (for Llama: ▁ → space, byte tokens
    /// <c>&lt;0xNN&gt;</c> → UTF-8 bytes with invalid sequences as U+FFFD per byte, fuse, strip one leading space).
    /// </summary>
    /// <param name="ids">Token ids.</param>
    /// <param name="skipSpecialTokens">Drop special added tokens (BOS, EOS, unk).</param>
    /// <exception cref="ArgumentOutOfRangeException">An id is not in the vocabulary.</exception>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var tokens = new List<string>();
        foreach (int id in ids)
        {
            if (skipSpecialTokens && _specialIds.Contains(id)) continue;
            tokens.Add(IdToToken(id) ?? throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id {id} is not in the vocabulary (size {VocabSize})."));
        }
        foreach (DecodeStep step in _decoder) tokens = ApplyDecodeStep(step, tokens);
        return string.Concat(tokens);
    }

    private static List<string> ApplyDecodeStep(DecodeStep step, List<string> tokens)
    {
        switch (step.Kind)
        {
            case "Replace":
                return tokens.ConvertAll(t => t.Replace(step.From!, step.To, StringComparison.Ordinal));
            case "Fuse":
                return [string.Concat(tokens)];
            case "ByteLevel":
                return [ByteLevelMap.Decode(tokens)];
            case "Strip":
                return tokens.ConvertAll(t =>
                {
                    int s = 0, e = t.Length;
                    for (int k = 0; k < step.Start && s < e && t[s] == step.From![0]; k++) s++;
                    for (int k = 0; k < step.Stop && e > s && t[e - 1] == step.From![0]; k++) e--;
                    return t[s..e];
                });
            case "Metaspace":
                return tokens.Select((t, i) =>
                {
                    string r = t.Replace(step.From!, " ", StringComparison.Ordinal);
                    return i == 0 && step.Scheme != "never" && r.StartsWith(' ') ? r[1..] : r;
                }).ToList();
            case "ByteFallback":
            {
                var result = new List<string>(tokens.Count);
                var pending = new List<byte>();
                void Flush()
                {
                    if (pending.Count == 0) return;
                    try { result.Add(new UTF8Encoding(false, throwOnInvalidBytes: true).GetString([.. pending])); }
                    catch (DecoderFallbackException) { for (int k = 0; k < pending.Count; k++) result.Add("\uFFFD"); }
                    pending.Clear();
                }
                foreach (string t in tokens)
                {
                    if (TryParseByteToken(t, out byte b)) { pending.Add(b); continue; }
                    Flush();
                    result.Add(t);
                }
                Flush();
                return result;
            }
            default:
                throw new InvalidOperationException($"Unknown decoder step '{step.Kind}'.");
        }
    }

    private static bool TryParseByteToken(string t, out byte b)
    {
        b = 0;
        return t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
               && byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out b);
    }

    // ------------------------------------------------------------------ lookups

    /// <summary>Id of <paramref name="token"/> (a vocabulary piece as written in tokenizer.json, such as <c>"▁the"</c> or <c>"Ġthe"</c>, or an added token such as <c>"&lt;s&gt;"</c>), or <see langword="null"/>.</summary>
    public int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    /// <summary>The piece for <paramref name="id"/> as the vocabulary writes it (▁ for a space in SentencePiece vocabularies; GPT-2 byte chars such as Ġ for a space in byte-level ones), or <see langword="null"/> if the id is unused.</summary>
    public string? IdToToken(int id) => _idToToken.TryGetValue(id, out string? t) ? t : null;

    // ------------------------------------------------------------------ tokenizer.json pieces

    private static void ReadNormalizer(JsonElement e, string src, string field, List<NormStep> steps)
    {
        string type = TypeOf(e, src, field);
        switch (type)
        {
            case "Sequence":
                JsonElement list = Prop(e, "normalizers", src);
                int i = 0;
                foreach (JsonElement x in list.EnumerateArray()) ReadNormalizer(x, src, $"{field}.normalizers[{i++}]", steps);
                break;
            case "Prepend":
                steps.Add(new NormStep(OptString(e, "prepend", src) ?? throw Bad(src, field + ".prepend", "missing."), null, null));
                break;
            case "Replace":
                var (from, to) = ReadReplace(e, src, field);
                steps.Add(new NormStep(null, from, to));
                break;
            case "NFC":
                steps.Add(new NormStep(null, null, null, NormalizationForm.FormC));
                break;
            case "NFD":
                steps.Add(new NormStep(null, null, null, NormalizationForm.FormD));
                break;
            default:
                // NFKC/NFKD need the compatibility mappings, which UnicodeNormalization does not carry (and string.Normalize
                // is a no-op under InvariantGlobalization).
                throw new NotSupportedException($"Tokenizer '{src}', field '{field}': normalizer '{type}' is not supported (supported: Sequence, Prepend, Replace with a String pattern, NFC, NFD).");
        }
    }

    private static PreTokenizerSpec ReadPreTokenizer(JsonElement e, string src)
    {
        var items = new List<(JsonElement El, string Field)>();
        if (TypeOf(e, src, "pre_tokenizer") == "Sequence")
        {
            JsonElement list = Prop(e, "pretokenizers", src);
            if (list.ValueKind != JsonValueKind.Array) throw Bad(src, "pre_tokenizer.pretokenizers", "must be an array.");
            int i = 0;
            foreach (JsonElement x in list.EnumerateArray()) { items.Add((x, $"pre_tokenizer.pretokenizers[{i}]")); i++; }
        }
        else items.Add((e, "pre_tokenizer"));

        MetaspaceOptions? metaspace = null;
        ByteLevelOptions? byteLevel = null;
        var splits = new List<SplitStep>();
        const string supported = "supported: Metaspace alone, or Split (Regex/String pattern) steps followed by ByteLevel";
        foreach ((JsonElement x, string field) in items)
        {
            string type = TypeOf(x, src, field);
            if (metaspace is not null || byteLevel is not null)
                throw new NotSupportedException($"Tokenizer '{src}', field '{field}': pre-tokenizer '{type}' after a Metaspace or ByteLevel step is not supported ({supported}).");
            switch (type)
            {
                case "Metaspace":
                {
                    if (items.Count != 1)
                        throw new NotSupportedException($"Tokenizer '{src}', field '{field}': Metaspace combined with other pre-tokenizers is not supported ({supported}).");
                    string replacement = OptString(x, "replacement", src) ?? "▁";
                    string scheme = OptString(x, "prepend_scheme", src) ?? ((OptBool(x, "add_prefix_space", src) ?? true) ? "always" : "never");
                    if (scheme is not ("always" or "first" or "never"))
                        throw Bad(src, field + ".prepend_scheme", $"'{scheme}' is not one of always, first, never.");
                    metaspace = new MetaspaceOptions(replacement, scheme, OptBool(x, "split", src) ?? true);
                    break;
                }
                case "Split":
                {
                    JsonElement pattern = Prop(x, "pattern", src);
                    string regex;
                    if (pattern.ValueKind == JsonValueKind.Object && pattern.TryGetProperty("Regex", out JsonElement re) && re.ValueKind == JsonValueKind.String)
                        regex = re.GetString()!;
                    else if (pattern.ValueKind == JsonValueKind.Object && pattern.TryGetProperty("String", out JsonElement str) && str.ValueKind == JsonValueKind.String)
                        regex = Regex.Escape(str.GetString()!);
                    else throw Bad(src, field + ".pattern", "must be {\"Regex\": ...} or {\"String\": ...}.");
                    if (regex.Length == 0) throw Bad(src, field + ".pattern", "must not be empty.");
                    string behavior = OptString(x, "behavior", src) ?? throw Bad(src, field + ".behavior", "missing.");
                    if (behavior is not ("Removed" or "Isolated" or "MergedWithPrevious" or "MergedWithNext" or "Contiguous"))
                        throw Bad(src, field + ".behavior", $"'{behavior}' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous.");
                    PreTokenizerRegex compiled;
                    try { compiled = new PreTokenizerRegex(regex); }
                    catch (ArgumentException ex)
                    {
                        throw new NotSupportedException($"Tokenizer '{src}', field '{field}.pattern': the regex cannot be compiled by .NET ({ex.Message}).", ex);
                    }
                    splits.Add(new SplitStep(compiled, behavior, OptBool(x, "invert", src) ?? false));
                    break;
                }
                case "ByteLevel":
                    byteLevel = new ByteLevelOptions(OptBool(x, "add_prefix_space", src) ?? true, OptBool(x, "use_regex", src) ?? true);
                    break;
                default:
                    throw new NotSupportedException($"Tokenizer '{src}', field '{field}': pre-tokenizer '{type}' is not supported ({supported}).");
            }
        }
        if (splits.Count > 0 && byteLevel is null)
            throw new NotSupportedException($"Tokenizer '{src}', field 'pre_tokenizer': Split without a following ByteLevel step is not supported ({supported}).");
        return new PreTokenizerSpec(metaspace, [.. splits], byteLevel);
    }

    private static void ReadDecoder(JsonElement e, string src, string field, List<DecodeStep> steps)
    {
        string type = TypeOf(e, src, field);
        switch (type)
        {
            case "Sequence":
                int i = 0;
                foreach (JsonElement x in Prop(e, "decoders", src).EnumerateArray()) ReadDecoder(x, src, $"{field}.decoders[{i++}]", steps);
                break;
            case "Replace":
                var (from, to) = ReadReplace(e, src, field);
                steps.Add(new DecodeStep("Replace", from, to));
                break;
            case "ByteFallback":
            case "Fuse":
            case "ByteLevel":
                steps.Add(new DecodeStep(type));
                break;
            case "Strip":
                string content = OptString(e, "content", src) ?? " ";
                if (content.Length != 1) throw Bad(src, field + ".content", "must be one character.");
                int start = OptInt(e, "start", src) ?? 0, stop = OptInt(e, "stop", src) ?? 0;
                steps.Add(new DecodeStep("Strip", content, null, start, stop));
                break;
            case "Metaspace":
                string scheme = OptString(e, "prepend_scheme", src) ?? ((OptBool(e, "add_prefix_space", src) ?? true) ? "always" : "never");
                steps.Add(new DecodeStep("Metaspace", OptString(e, "replacement", src) ?? "▁", null, Scheme: scheme));
                break;
            default:
                throw new NotSupportedException($"Tokenizer '{src}', field '{field}': decoder '{type}' is not supported (supported: Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace, ByteLevel).");
        }
    }

    private static (int[] Prefix, int[] Suffix) ReadPostProcessor(JsonElement root, string src)
    {
        if (!root.TryGetProperty("post_processor", out JsonElement pp) || pp.ValueKind == JsonValueKind.Null) return ([], []);
        string type = TypeOf(pp, src, "post_processor");
        if (type == "Sequence")
        {
            foreach (JsonElement x in Prop(pp, "processors", src).EnumerateArray())
                if (TypeOf(x, src, "post_processor.processors") == "TemplateProcessing") { pp = x; type = "TemplateProcessing"; break; }
            if (type != "TemplateProcessing") return ([], []);
        }
        if (type == "ByteLevel") return ([], []);
        if (type != "TemplateProcessing")
            throw new NotSupportedException($"Tokenizer '{src}', field 'post_processor': '{type}' is not supported (supported: TemplateProcessing).");

        JsonElement special = pp.TryGetProperty("special_tokens", out JsonElement st) ? st : default;
        var prefix = new List<int>();
        var suffix = new List<int>();
        bool seenSequence = false;
        foreach (JsonElement item in Prop(pp, "single", src).EnumerateArray())
        {
            if (item.TryGetProperty("Sequence", out _)) { seenSequence = true; continue; }
            if (!item.TryGetProperty("SpecialToken", out JsonElement sp))
                throw Bad(src, "post_processor.single", "items must be Sequence or SpecialToken.");
            string name = OptString(sp, "id", src) ?? throw Bad(src, "post_processor.single.SpecialToken.id", "missing.");
            if (special.ValueKind != JsonValueKind.Object || !special.TryGetProperty(name, out JsonElement def))
                throw Bad(src, "post_processor.special_tokens", $"'{name}' is used in the template but not defined.");
            foreach (JsonElement id in Prop(def, "ids", src).EnumerateArray())
                (seenSequence ? suffix : prefix).Add(id.GetInt32());
        }
        return ([.. prefix], [.. suffix]);
    }

    private static (string From, string To) ReadReplace(JsonElement e, string src, string field)
    {
        JsonElement pattern = Prop(e, "pattern", src);
        if (pattern.ValueKind != JsonValueKind.Object || !pattern.TryGetProperty("String", out JsonElement str) || str.ValueKind != JsonValueKind.String)
            throw new NotSupportedException($"Tokenizer '{src}', field '{field}.pattern': only {{\"String\": ...}} patterns are supported (no Regex).");
        string from = str.GetString()!;
        if (from.Length == 0) throw Bad(src, field + ".pattern", "must not be empty.");
        return (from, OptString(e, "content", src) ?? throw Bad(src, field + ".content", "missing."));
    }

    private static string? TokenString(JsonElement cfg, string name, string src)
    {
        if (!cfg.TryGetProperty(name, out JsonElement e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind == JsonValueKind.String) return e.GetString();
        if (e.ValueKind == JsonValueKind.Object) return OptString(e, "content", src);
        throw Bad(src, name, "must be a string or an object with 'content'.");
    }

    private static JsonDocument ParseJson(string json, string src)
    {
        try { return JsonDocument.Parse(json); }
        catch (JsonException e) { throw new InvalidDataException($"Tokenizer file '{src}' is not valid JSON ({e.Message}).", e); }
    }

    private static string TypeOf(JsonElement e, string src, string field) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out JsonElement t) && t.ValueKind == JsonValueKind.String
            ? t.GetString()! : throw Bad(src, field, "must be an object with a string 'type'.");

    private static JsonElement Prop(JsonElement e, string name, string src) =>
        e.ValueKind == JsonValueKind.Object && e.TryGetProperty(name, out JsonElement v) ? v : throw Bad(src, name, "required field is missing.");

    private static string? OptString(JsonElement e, string name, string src) =>
        !e.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.String ? v.GetString() : throw Bad(src, name, "must be a string.");

    private static bool? OptBool(JsonElement e, string name, string src) =>
        !e.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Bad(src, name, "must be true or false.") };

    private static int? OptInt(JsonElement e, string name, string src) =>
        !e.TryGetProperty(name, out JsonElement v) || v.ValueKind == JsonValueKind.Null ? null
        : v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw Bad(src, name, "must be an integer.");

    private static InvalidDataException Bad(string src, string? field, string problem) =>
        new(field is null ? $"Tokenizer file '{src}': {problem}" : $"Tokenizer file '{src}', field '{field}': {problem}");
}
