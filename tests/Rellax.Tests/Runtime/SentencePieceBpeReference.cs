using System.Text;

namespace Rellax.Tests.Runtime;

/// <summary>
/// Independent reference for the stories260K tokenizer: reads the llama2.c vocabulary export <c>tok512.bin</c>
/// (int32 max_token_length, then per token float32 score, int32 byte length, bytes; "▁" written as a space) and
/// encodes with SentencePiece BPE: dummy prefix "▁", spaces → "▁", start from code points (code points outside
/// the vocabulary become byte tokens, id = 3 + byte), then repeatedly merge the adjacent pair whose concatenation
/// is a piece with the highest score, leftmost on ties. Shares no code with Rellax.Runtime.
/// </summary>
internal sealed class SentencePieceBpeReference
{
    private readonly Dictionary<string, int> _pieceToId = new(StringComparer.Ordinal); // ordinary pieces only (id >= 259)
    private readonly float[] _scores;

    public string[] Pieces { get; }

    public SentencePieceBpeReference(string tok512BinPath)
    {
        using var r = new BinaryReader(File.OpenRead(tok512BinPath));
        int maxLen = r.ReadInt32();
        var pieces = new List<string>();
        var scores = new List<float>();
        while (r.BaseStream.Position < r.BaseStream.Length)
        {
            scores.Add(r.ReadSingle());
            int len = r.ReadInt32();
            if (len < 0 || len > maxLen) throw new InvalidDataException($"token {pieces.Count}: length {len} outside [0, {maxLen}]");
            pieces.Add(Encoding.UTF8.GetString(r.ReadBytes(len)));
        }
        if (pieces.Count != 512) throw new InvalidDataException($"expected 512 tokens, read {pieces.Count}");
        for (int i = 0; i < 256; i++)
            if (pieces[3 + i] != $"<0x{i:X2}>") throw new InvalidDataException($"id {3 + i} should be <0x{i:X2}>, is '{pieces[3 + i]}'");
        for (int id = 259; id < pieces.Count; id++)
        {
            pieces[id] = pieces[id].Replace(' ', '▁');
            _pieceToId.Add(pieces[id], id);
        }
        Pieces = [.. pieces];
        _scores = [.. scores];
    }

    /// <summary>SentencePiece remove_extra_whitespaces: trim spaces at both ends, collapse inner runs of spaces.</summary>
    public static string RemoveExtraWhitespaces(string s) =>
        System.Text.RegularExpressions.Regex.Replace(s.Trim(' '), " {2,}", " ");

    /// <summary>Encodes <paramref name="text"/> (no BOS). Empty text gives no ids.</summary>
    public List<int> Encode(string text)
    {
        if (text.Length == 0) return [];
        string s = "▁" + text.Replace(' ', '▁');
        var ids = new List<int>();
        foreach (Rune rune in s.EnumerateRunes())
        {
            if (_pieceToId.TryGetValue(rune.ToString(), out int id)) { ids.Add(id); continue; }
            foreach (byte b in Encoding.UTF8.GetBytes(rune.ToString())) ids.Add(3 + b);
        }
        while (true)
        {
            float best = float.NegativeInfinity;
            int bestAt = -1, bestId = -1;
            for (int i = 0; i + 1 < ids.Count; i++)
            {
                if (ids[i] < 259 || ids[i + 1] < 259) continue; // byte and control pieces never merge
                if (_pieceToId.TryGetValue(Pieces[ids[i]] + Pieces[ids[i + 1]], out int merged) && _scores[merged] > best)
                {
                    best = _scores[merged];
                    bestAt = i;
                    bestId = merged;
                }
            }
            if (bestAt < 0) return ids;
            ids[bestAt] = bestId;
            ids.RemoveAt(bestAt + 1);
        }
    }
}
