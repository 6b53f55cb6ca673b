using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Rellax.Runtime;

/// <summary>
/// GPT-2's byte-to-unicode map, used by byte-level BPE vocabularies (GPT-2, Llama 3, Qwen2, cl100k): every byte
/// 0..255 is written as one printable code point, so a UTF-8 byte string becomes a string of 1 char per byte.
/// </summary>
/// <remarks>Bytes 33..126, 161..172 and 174..255 stand for themselves (Latin-1); the other 68 bytes (0..32, 127..160,
/// 173), in increasing order, become U+0100, U+0101, ... (so the space 0x20 is <c>Ġ</c> U+0120 and <c>\n</c> is <c>Ċ</c>).</remarks>
internal static class ByteLevelMap
{
    /// <summary>Byte value → its char (256 entries).</summary>
    internal static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>Char → byte value, for the 256 chars of <see cref="ByteToChar"/>.</summary>
    internal static readonly Dictionary<char, byte> CharToByte = BuildCharToByte();

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            map[b] = b is >= 33 and <= 126 or >= 161 and <= 172 or >= 174 and <= 255 ? (char)b : (char)next++;
        return map;
    }

    private static Dictionary<char, byte> BuildCharToByte()
    {
        var d = new Dictionary<char, byte>(256);
        for (int b = 0; b < 256; b++) d.Add(ByteToChar[b], (byte)b);
        return d;
    }

    /// <summary>The UTF-8 bytes of <paramref name="text"/> (which must hold no lone surrogate) written one char per byte.</summary>
    internal static string Encode(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        return string.Create(bytes.Length, bytes, static (span, b) =>
        {
            for (int i = 0; i < b.Length; i++) span[i] = ByteToChar[b[i]];
        });
    }

    /// <summary>
    /// HF's <c>ByteLevel</c> decoder: each token's chars are mapped back to bytes (a token with a char outside the map,
    /// such as an added token written in plain text with a non-Latin-1 char, contributes its own UTF-8 bytes), then
    /// the bytes of all tokens are decoded as UTF-8, each maximal invalid sequence becoming one U+FFFD (as Rust's
    /// <c>String::from_utf8_lossy</c>).
    /// </summary>
    internal static string Decode(IEnumerable<string> tokens)
    {
        var bytes = new List<byte>();
        foreach (string t in tokens)
        {
            int mark = bytes.Count;
            bool all = true;
            foreach (char c in t)
            {
                if (!CharToByte.TryGetValue(c, out byte b)) { all = false; break; }
                bytes.Add(b);
            }
            if (!all)
            {
                bytes.RemoveRange(mark, bytes.Count - mark);
                bytes.AddRange(Encoding.UTF8.GetBytes(t));
            }
        }
        return Encoding.UTF8.GetString([.. bytes]);
    }
}

/// <summary>
/// A pre-tokenizer regex from <c>tokenizer.json</c> (Oniguruma / Rust syntax) run with .NET's <see cref="Regex"/>
/// with the semantics the HF tokenizers give it: matching is per Unicode code point, not per UTF-16 char.
/// </summary>
/// <remarks>
/// <para>What .NET lacks, and how it is translated:</para>
/// <list type="bullet">
/// <item>Possessive quantifiers (<c>X?+</c>, <c>X++</c>, <c>X*+</c>, <c>X{n,m}+</c>, as in tiktoken's newer cl100k/o200k
/// patterns) become atomic groups <c>(?&gt;X?)</c> etc., which is the same thing.</item>
/// <item>Code points above U+FFFF: .NET matches UTF-16 chars, and a surrogate is neither <c>\p{L}</c> nor <c>\p{N}</c>,
/// so on the raw string <c>[^\r\n\p{L}\p{N}]?\p{L}+</c> would not take an emoji as the optional prefix of the word after
/// it and could split a surrogate pair. The regex therefore runs on a shadow string with one char per code point: each
/// supplementary code point is replaced by a BMP char of the same Unicode general category (so it falls in exactly
/// the same <c>\p{..}</c>, <c>\s</c> and negated classes), and match bounds are mapped back.</item>
/// </list>
/// <para>Everything else used by the GPT-2, Llama 3, Qwen2 and cl100k patterns (<c>\p{L}</c>, <c>\p{N}</c>, <c>\s</c>,
/// <c>(?i:...)</c>, <c>(?!\S)</c>, <c>{1,3}</c>) means the same in .NET; .NET's <c>\s</c> is the Unicode White_Space set,
/// as Oniguruma's. Known residual differences: the Unicode version of the category tables (the .NET runtime's vs the
/// Rust crate's); and case folding inside <c>(?i:...)</c>: Oniguruma and Rust fold U+017F (long s) to <c>s</c>, .NET
/// (culture-invariant) does not (measured), so <c>'ſ</c> is not taken as the contraction <c>'s</c> here. No other
/// letter of the contraction alternatives (s t re ve m ll d) has an extra case-fold partner.</para>
/// </remarks>
internal sealed class PreTokenizerRegex
{
    /// <summary>GPT-2's pattern, used by the <c>ByteLevel</c> pre-tokenizer when <c>use_regex</c> is true.</summary>
    internal const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Regex _regex;

    /// <summary>The pattern as written in tokenizer.json.</summary>
    internal string Source { get; }

    /// <summary>The .NET pattern it was translated to.</summary>
    internal string Translated { get; }

    /// <summary>Compiles <paramref name="pattern"/> (tokenizer.json syntax).</summary>
    /// <exception cref="ArgumentException">.NET cannot compile the translated pattern.</exception>
    internal PreTokenizerRegex(string pattern)
    {
        Source = pattern;
        Translated = TranslatePossessive(pattern);
        _regex = new Regex(Translated, RegexOptions.CultureInvariant);
    }

    /// <summary>
    /// Non-overlapping, non-empty matches of the pattern in <paramref name="s"/>, left to right, as [start, end) char
    /// ranges of <paramref name="s"/> (never splitting a surrogate pair). <paramref name="s"/> must hold no lone surrogate.
    /// </summary>
    internal List<(int Start, int End)> Matches(string s)
    {
        var result = new List<(int, int)>();
        if (!s.AsSpan().ContainsAnyInRange('\uD800', '\uDFFF'))
        {
            foreach (ValueMatch m in _regex.EnumerateMatches(s))
                if (m.Length > 0) result.Add((m.Index, m.Index + m.Length));
            return result;
        }
        // Shadow string: one char per code point; pos[k] = index in s of shadow char k (pos[n] = s.Length).
        var shadow = new StringBuilder(s.Length);
        var pos = new List<int>(s.Length + 1);
        for (int i = 0; i < s.Length;)
        {
            pos.Add(i);
            if (char.IsHighSurrogate(s[i]))
            {
                shadow.Append(Representative(CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(s[i], s[i + 1]))));
                i += 2;
            }
            else shadow.Append(s[i++]);
        }
        pos.Add(s.Length);
        foreach (ValueMatch m in _regex.EnumerateMatches(shadow.ToString()))
            if (m.Length > 0) result.Add((pos[m.Index], pos[m.Index + m.Length]));
        return result;
    }

    /// <summary>A BMP char of general category <paramref name="c"/> that no pattern names literally.</summary>
    private static char Representative(UnicodeCategory c) => c switch
    {
        UnicodeCategory.UppercaseLetter => '\u00C0',
        UnicodeCategory.LowercaseLetter => '\u00F8',
        UnicodeCategory.TitlecaseLetter => '\u01C5',
        UnicodeCategory.ModifierLetter => '\u02B0',
        UnicodeCategory.OtherLetter => '\u05D0',
        UnicodeCategory.NonSpacingMark => '\u0300',
        UnicodeCategory.SpacingCombiningMark => '\u0903',
        UnicodeCategory.EnclosingMark => '\u20DD',
        UnicodeCategory.DecimalDigitNumber => '\u0660',
        UnicodeCategory.LetterNumber => '\u2160',
        UnicodeCategory.OtherNumber => '\u00B2',
        UnicodeCategory.SpaceSeparator => '\u2000',
        UnicodeCategory.LineSeparator => '\u2028',
        UnicodeCategory.ParagraphSeparator => '\u2029',
        UnicodeCategory.Control => '\u0080',
        UnicodeCategory.Format => '\u00AD',
        UnicodeCategory.PrivateUse => '\uE000',
        UnicodeCategory.ConnectorPunctuation => '\u203F',
        UnicodeCategory.DashPunctuation => '\u2010',
        UnicodeCategory.OpenPunctuation => '\u2045',
        UnicodeCategory.ClosePunctuation => '\u2046',
        UnicodeCategory.InitialQuotePunctuation => '\u00AB',
        UnicodeCategory.FinalQuotePunctuation => '\u00BB',
        UnicodeCategory.OtherPunctuation => '\u00B6',
        UnicodeCategory.MathSymbol => '\u00D7',
        UnicodeCategory.CurrencySymbol => '\u00A2',
        UnicodeCategory.ModifierSymbol => '\u02C2',
        UnicodeCategory.OtherSymbol => '\u00A6',
        _ => '\u0378', // OtherNotAssigned
    };

    /// <summary>Rewrites possessive quantifiers <c>X?+ X*+ X++ X{n,m}+</c> as atomic groups <c>(?&gt;X?)</c> etc.</summary>
    internal static string TranslatePossessive(string p)
    {
        var sb = new StringBuilder(p.Length + 16);
        var groupStarts = new Stack<int>();
        int atomStart = -1; // output index where the last complete atom starts
        int i = 0;
        while (i < p.Length)
        {
            char c = p[i];
            switch (c)
            {
                case '\\':
                {
                    int start = sb.Length;
                    int len = 2;
                    if (i + 2 < p.Length && p[i + 1] is 'p' or 'P' && p[i + 2] == '{')
                    {
                        int close = p.IndexOf('}', i + 3);
                        len = close < 0 ? p.Length - i : close - i + 1;
                    }
                    len = Math.Min(len, p.Length - i);
                    sb.Append(p, i, len);
                    i += len;
                    atomStart = start;
                    continue;
                }
                case '[':
                {
                    int start = sb.Length;
                    int j = i + 1;
                    if (j < p.Length && p[j] == '^') j++;
                    if (j < p.Length && p[j] == ']') j++; // a leading ']' is literal
                    while (j < p.Length && p[j] != ']') j += p[j] == '\\' ? 2 : 1;
                    j = Math.Min(j + 1, p.Length);
                    sb.Append(p, i, j - i);
                    i = j;
                    atomStart = start;
                    continue;
                }
                case '(':
                    groupStarts.Push(sb.Length);
                    sb.Append(c);
                    i++;
                    atomStart = -1;
                    continue;
                case ')':
                    sb.Append(c);
                    i++;
                    atomStart = groupStarts.Count > 0 ? groupStarts.Pop() : -1;
                    continue;
                case '?' or '*' or '+' or '{':
                {
                    int qEnd = i + 1;
                    if (c == '{')
                    {
                        int close = p.IndexOf('}', i);
                        if (close < 0) { sb.Append(c); i++; atomStart = sb.Length - 1; continue; }
                        qEnd = close + 1;
                    }
                    sb.Append(p, i, qEnd - i);
                    i = qEnd;
                    if (i < p.Length && p[i] == '+' && atomStart >= 0)
                    {
                        sb.Insert(atomStart, "(?>");
                        sb.Append(')');
                        i++; // drop the possessive '+'
                    }
                    atomStart = -1;
                    continue;
                }
                default:
                    atomStart = sb.Length;
                    sb.Append(c);
                    i++;
                    continue;
            }
        }
        return sb.ToString();
    }
}
