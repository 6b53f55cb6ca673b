using System.Globalization;
using System.Text;

namespace Rellax.Rec;

/// <summary>
/// Text exactly as two Python built-ins print it, so the prompts and training files we write are byte-identical to the
/// ones the reference code (github.com/LaVieEnRose365/ReLLa, Python 3) writes:
/// <list type="bullet">
/// <item><see cref="AppendRepr"/>: <c>repr(str)</c>, which is how the reference's f-strings put a <c>list</c> of history
/// strings into a prompt (<c>str(list)</c> calls <c>repr</c> on each element);</item>
/// <item><see cref="AppendJsonString"/>: a string as <c>json.dumps</c> writes it with its default
/// <c>ensure_ascii=True</c> (the reference's <c>data2json.py</c> uses <c>json.dump</c> with the default).</item>
/// </list>
/// </summary>
internal static class PythonText
{
    private const string Hex = "0123456789abcdef";

    // Printable ASCII except the backslash and both quotes: copied as is by repr and json.dumps (runs found vectorized).
    private static readonly System.Buffers.SearchValues<char> PlainAscii = System.Buffers.SearchValues.Create(
        " !#$%&()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~");

    /// <summary>
    /// Appends <c>repr(s)</c> as CPython 3 prints it (<c>unicode_repr</c> in <c>Objects/unicodeobject.c</c>):
    /// <list type="bullet">
    /// <item>the quote is <c>'</c>, or <c>"</c> when <paramref name="s"/> contains <c>'</c> and no <c>"</c>;</item>
    /// <item>the chosen quote and <c>\</c> are escaped with a backslash; <c>\t</c>, <c>\n</c>, <c>\r</c> are written as
    /// those escapes; other ASCII controls (U+0000..U+001F, U+007F) as <c>\xhh</c>;</item>
    /// <item>a non-ASCII code point is kept as is when Python calls it printable, i.e. when its Unicode general category
    /// is not Cc, Cf, Cs, Co, Cn, Zl, Zp or Zs (so <c>é</c> and emoji stay, U+00A0 becomes <c>\xa0</c>, U+200B
    /// <c>\u200b</c>); otherwise <c>\xhh</c> (≤ U+00FF), <c>\uhhhh</c> (≤ U+FFFF) or <c>\Uhhhhhhhh</c>, lowercase hex;</item>
    /// <item>a surrogate pair is one code point; a lone surrogate (category Cs) is written <c>\udxxx</c>, as Python
    /// writes a lone surrogate in a <c>str</c>.</item>
    /// </list>
    /// Categories come from .NET's Unicode tables, which may be a newer Unicode version than a given Python's: a code
    /// point assigned in between is printable here and <c>\u</c>-escaped there.
    /// </summary>
    public static void AppendRepr(StringBuilder sb, string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        sb.Append(quote);
        for (int i = 0; i < s.Length; i++)
        {
            int run = s.AsSpan(i).IndexOfAnyExcept(PlainAscii);
            if (run < 0) { sb.Append(s, i, s.Length - i); break; }
            if (run > 0) { sb.Append(s, i, run); i += run; }
            char c = s[i];
            if (c < 0x80)
            {
                if (c == quote || c == '\\') sb.Append('\\').Append(c);
                else if (c == '\t') sb.Append("\\t");
                else if (c == '\n') sb.Append("\\n");
                else if (c == '\r') sb.Append("\\r");
                else if (c < 0x20 || c == 0x7f) AppendHex(sb, 'x', c, 2);
                else sb.Append(c);
                continue;
            }
            int cp = c;
            int width = 1;
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                cp = char.ConvertToUtf32(c, s[i + 1]);
                width = 2;
            }
            if (IsPrintable(cp)) sb.Append(s, i, width);
            else if (cp <= 0xff) AppendHex(sb, 'x', cp, 2);
            else if (cp <= 0xffff) AppendHex(sb, 'u', cp, 4);
            else AppendHex(sb, 'U', cp, 8);
            i += width - 1;
        }
        sb.Append(quote);
    }

    /// <summary>
    /// Appends <paramref name="s"/> as a JSON string literal exactly as Python's <c>json.dumps</c> writes it with
    /// <c>ensure_ascii=True</c> (<c>py_encode_basestring_ascii</c>): quoted with <c>"</c>; <c>"</c> and <c>\</c>
    /// backslash-escaped; <c>\b \f \n \r \t</c> as those escapes; every other UTF-16 unit outside printable ASCII
    /// (U+0020..U+007E) as <c>\uhhhh</c> in lowercase hex, so a character above U+FFFF becomes its two surrogate
    /// escapes. The result is pure ASCII.
    /// </summary>
    public static void AppendJsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        for (int i = 0; i < s.Length; i++)
        {
            int run = s.AsSpan(i).IndexOfAnyExcept(PlainAscii);
            if (run < 0) { sb.Append(s, i, s.Length - i); break; }
            if (run > 0) { sb.Append(s, i, run); i += run; }
            char c = s[i];
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (c < 0x20 || c > 0x7e) AppendHex(sb, 'u', c, 4);
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }

    /// <summary>Python's <c>str.isprintable</c> for one code point: false for categories Cc, Cf, Cs, Co, Cn, Zl, Zp and
    /// Zs, except the ASCII space.</summary>
    internal static bool IsPrintable(int codePoint)
    {
        if (codePoint == ' ') return true;
        return CharUnicodeInfo.GetUnicodeCategory(codePoint) switch
        {
            UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse
                or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator
                or UnicodeCategory.SpaceSeparator => false,
            _ => true,
        };
    }

    private static void AppendHex(StringBuilder sb, char kind, int value, int digits)
    {
        sb.Append('\\').Append(kind);
        for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4) sb.Append(Hex[(value >> shift) & 0xf]);
    }
}
