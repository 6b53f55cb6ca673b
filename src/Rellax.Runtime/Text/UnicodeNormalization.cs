using System.Text;

namespace Rellax.Runtime;

/// <summary>
/// Unicode canonical normalization (NFC, NFD) in managed code, for the <c>NFC</c>/<c>NFD</c> normalizers of
/// tokenizer.json (Qwen2 uses NFC).
/// </summary>
/// <remarks>
/// <para>Why not <see cref="string.Normalize(NormalizationForm)"/>: the solution builds with
/// <c>InvariantGlobalization</c>, and in that mode .NET returns non-ASCII strings unchanged from <c>Normalize</c>.</para>
/// <para>Algorithm (Unicode Standard Annex #15): full canonical decomposition (tables plus the Hangul arithmetic),
/// canonical ordering of non-starters by combining class (stable), then, for NFC, canonical composition of
/// unblocked pairs into primary composites. Data: <c>UnicodeNormalization.Data.cs</c>, generated from Python's
/// <c>unicodedata</c> (Unicode 14.0): for every code point with a canonical decomposition its mapping and whether
/// <c>NFC(c) == c</c> (so it is a primary composite, not in Full_Composition_Exclusion), and every non-zero
/// canonical combining class. Characters added to Unicode after 14.0 are left as they are. Generator:
/// <code>
/// for cp in range(0x110000): (skip Hangul syllables AC00..D7A3)
///     c = unicodedata.combining(chr(cp)); d = unicodedata.decomposition(chr(cp))
///     if c: ccc.append((cp, c))
///     if d and not d.startswith('&lt;'): parts = [int(x, 16) for x in d.split()]
///         dec.append((cp, parts[0], parts[1] if len(parts) == 2 else -1,
///                     int(len(parts) == 2 and unicodedata.normalize('NFC', chr(cp)) == chr(cp))))
/// </code></para>
/// </remarks>
internal static partial class UnicodeNormalization
{
    private const int SBase = 0xAC00, LBase = 0x1100, VBase = 0x1161, TBase = 0x11A7;
    private const int LCount = 19, VCount = 21, TCount = 28, NCount = VCount * TCount, SCount = LCount * NCount;

    private static readonly Dictionary<int, (int First, int Second)> Decompositions = BuildDecompositions();
    private static readonly Dictionary<long, int> Compositions = BuildCompositions();
    private static readonly Dictionary<int, byte> CombiningClasses = BuildCombiningClasses();

    private static Dictionary<int, (int, int)> BuildDecompositions()
    {
        ReadOnlySpan<int> d = DecompositionData;
        var map = new Dictionary<int, (int, int)>(d.Length / 4);
        for (int i = 0; i < d.Length; i += 4) map.Add(d[i], (d[i + 1], d[i + 2]));
        return map;
    }

    private static Dictionary<long, int> BuildCompositions()
    {
        ReadOnlySpan<int> d = DecompositionData;
        var map = new Dictionary<long, int>();
        for (int i = 0; i < d.Length; i += 4)
            if (d[i + 3] == 1) map.Add(Pair(d[i + 1], d[i + 2]), d[i]);
        return map;
    }

    private static Dictionary<int, byte> BuildCombiningClasses()
    {
        ReadOnlySpan<int> d = CombiningClassData;
        var map = new Dictionary<int, byte>(d.Length / 2);
        for (int i = 0; i < d.Length; i += 2) map.Add(d[i], (byte)d[i + 1]);
        return map;
    }

    private static long Pair(int a, int b) => ((long)a << 21) | (uint)b;

    /// <summary>Canonical combining class of code point <paramref name="cp"/> (0 for starters).</summary>
    internal static int CombiningClass(int cp) => cp < 0x300 ? 0 : CombiningClasses.TryGetValue(cp, out byte c) ? c : 0;

    /// <summary>NFC (composed) or NFD (decomposed) form of <paramref name="s"/>, which must be well-formed UTF-16.</summary>
    /// <param name="s">Text without lone surrogates.</param>
    /// <param name="compose">True for NFC, false for NFD.</param>
    internal static string Normalize(string s, bool compose)
    {
        // Nothing below U+00C0 decomposes, and nothing below U+0300 combines: such text is already NFC.
        int firstRelevant = -1;
        for (int i = 0; i < s.Length && firstRelevant < 0; i++)
            if (s[i] >= (compose ? '\u0300' : '\u00C0')) firstRelevant = i;
        if (firstRelevant < 0) return s;

        var cps = new List<int>(s.Length + 8);
        foreach (Rune r in s.EnumerateRunes()) Decompose(r.Value, cps);
        OrderCanonically(cps);
        if (compose) ComposeInPlace(cps);
        var sb = new StringBuilder(cps.Count + 4);
        foreach (int cp in cps) sb.Append(new Rune(cp).ToString());
        return sb.ToString();
    }

    /// <summary>
    /// Canonical ordering: each run of non-starters sorted stably by combining class. Short runs (the usual one or two
    /// marks) by insertion; longer ones by a sort on (class, position), so a hostile run of n marks costs O(n log n), not n².
    /// </summary>
    internal static void OrderCanonically(List<int> cps)
    {
        const int Short = 16;
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(cps);
        for (int start = 0; start < span.Length;)
        {
            if (CombiningClass(span[start]) == 0) { start++; continue; }
            int end = start + 1;
            while (end < span.Length && CombiningClass(span[end]) != 0) end++;
            var run = span[start..end];
            if (run.Length <= Short)
            {
                for (int i = 1; i < run.Length; i++)
                {
                    int c = CombiningClass(run[i]);
                    for (int j = i; j > 0 && CombiningClass(run[j - 1]) > c; j--) (run[j - 1], run[j]) = (run[j], run[j - 1]);
                }
            }
            else
            {
                var keys = new long[run.Length];
                for (int i = 0; i < run.Length; i++) keys[i] = ((long)CombiningClass(run[i]) << 32) | (uint)i;
                var items = run.ToArray();
                Array.Sort(keys, items);
                items.CopyTo(run);
            }
            start = end;
        }
    }

    private static void Decompose(int cp, List<int> output)
    {
        if (cp is >= SBase and < SBase + SCount)
        {
            int si = cp - SBase;
            output.Add(LBase + si / NCount);
            output.Add(VBase + si % NCount / TCount);
            if (si % TCount != 0) output.Add(TBase + si % TCount);
            return;
        }
        if (cp >= 0xC0 && Decompositions.TryGetValue(cp, out (int First, int Second) d))
        {
            Decompose(d.First, output);
            if (d.Second >= 0) Decompose(d.Second, output);
            return;
        }
        output.Add(cp);
    }

    private static int Compose(int a, int b)
    {
        if (a is >= LBase and < LBase + LCount && b is >= VBase and < VBase + VCount)
            return SBase + ((a - LBase) * VCount + (b - VBase)) * TCount;
        if (a is >= SBase and < SBase + SCount && (a - SBase) % TCount == 0 && b is > TBase and < TBase + TCount)
            return a + (b - TBase);
        return Compositions.TryGetValue(Pair(a, b), out int c) ? c : -1;
    }

    /// <summary>Canonical composition (UAX #15): a char joins the last starter unless a char between them blocks it.</summary>
    private static void ComposeInPlace(List<int> cps)
    {
        if (cps.Count < 2) return;
        int starterPos = 0;
        int lastClass = CombiningClass(cps[0]);
        if (lastClass != 0) lastClass = 256; // no starter yet: nothing can compose with it
        int outPos = 1;
        for (int i = 1; i < cps.Count; i++)
        {
            int ch = cps[i];
            int chClass = CombiningClass(ch);
            int composite = lastClass == 256 ? -1 : Compose(cps[starterPos], ch);
            if (composite >= 0 && (lastClass < chClass || lastClass == 0))
            {
                cps[starterPos] = composite;
                continue;
            }
            if (chClass == 0) starterPos = outPos;
            lastClass = chClass;
            cps[outPos++] = ch;
        }
        cps.RemoveRange(outPos, cps.Count - outPos);
    }
}
