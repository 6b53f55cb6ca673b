using System.Text;

using Rellax.Runtime;

namespace Rellax.Rec;

/// <summary>How a <see cref="CsvRecordReader"/> reads quotes inside a quoted field.</summary>
internal enum CsvQuoting
{
    /// <summary>
    /// RFC 4180: a field that starts with <c>"</c> runs to the next lone <c>"</c>; <c>""</c> inside it is one literal
    /// quote. After the closing quote only the separator or the end of the record may follow, and a quote inside an
    /// unquoted field is an error.
    /// </summary>
    Rfc4180,

    /// <summary>
    /// The MySQL-style dump of Book-Crossing (what pandas reads with <c>escapechar='\\'</c>): <c>\"</c> inside a quoted
    /// field does not end it and is kept as the two characters <c>\"</c> (as the reference notebook keeps it); a
    /// <c>"</c> ends the field only when the separator or the end of the record follows it, any other <c>"</c> is
    /// literal. A line that ends in <c>\"</c> inside a quoted field (single-line reading) closes the field there, the
    /// backslash kept as text, as the reference's plain split of the ratings file does. Quotes inside unquoted fields
    /// are literal.
    /// </summary>
    Backslash,
}

/// <summary>
/// A small, allocation-lean reader of delimited text records (RFC 4180 CSV and the Book-Crossing variant, see
/// <see cref="CsvQuoting"/>). Fields of the current record are spans into an internal buffer, valid until the next
/// <see cref="Read"/>; no per-field strings are made unless asked for (<see cref="GetString"/>).
/// <list type="bullet">
/// <item>Lines end with <c>\n</c> or <c>\r\n</c>; empty and white-space-only lines between records are skipped; a UTF-8
/// byte-order mark at the start of the file is dropped.</item>
/// <item><see cref="Line"/> is the 1-based line where the current record starts (counting every line of the file), so
/// <see cref="Where"/> (<c>FILE:LINE</c>) points at it even when a quoted field spans lines.</item>
/// <item>A quoted field may span lines only when the reader was created with <c>multiline: true</c> (the line break is
/// kept as <c>\n</c>), and then at most <see cref="MaxRecordLines"/> lines. Either way a record whose quote does not
/// close properly is an error of its first line only: when the reader had gone on to later lines looking for the
/// closing quote, it goes back and reads them again as records of their own, so one stray quote costs one line.</item>
/// <item>A malformed record is not an exception: <see cref="Read"/> returns true with <see cref="Error"/> set, so the
/// caller can report it through <see cref="BadLines"/> together with its own checks.</item>
/// </list>
/// </summary>
internal sealed class CsvRecordReader : IDisposable
{
    /// <summary>The most lines one record may span when quoted fields may contain line breaks.</summary>
    internal const int MaxRecordLines = 100;

    private StreamReader _reader;
    private readonly Encoding _encoding;
    private readonly char _separator;
    private readonly CsvQuoting _quoting;
    private readonly bool _multiline;

    private char[] _buf = new char[1 << 16];
    private int _pos, _end;
    private bool _eof, _first = true;
    private int _lineNumber;

    private char[] _rec = new char[256];
    private int _recLen;
    private long _reads;
    private int[] _starts = new int[16], _lengths = new int[16];
    private bool[] _quoted = new bool[16];

    /// <summary>Opens <paramref name="path"/>.</summary>
    /// <param name="path">The file; a missing file is a <see cref="FileNotFoundException"/> naming it.</param>
    /// <param name="encoding">The file's text encoding (no byte-order-mark detection).</param>
    /// <param name="separator">The field separator (<c>,</c> or <c>;</c>).</param>
    /// <param name="quoting">How quotes are read.</param>
    /// <param name="multiline">Whether a quoted field may contain line breaks.</param>
    public CsvRecordReader(string path, Encoding encoding, char separator = ',', CsvQuoting quoting = CsvQuoting.Rfc4180, bool multiline = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(encoding);
        if (separator is '"' or '\n' or '\r' or '\\') throw new ArgumentException($"'{separator}' cannot be a separator", nameof(separator));
        if (!File.Exists(path)) throw new FileNotFoundException($"dataset file '{path}' does not exist", path);
        Path = path;
        _separator = separator;
        _quoting = quoting;
        _multiline = multiline;
        _encoding = encoding;
        _reader = Open();
    }

    /// <summary>The file being read.</summary>
    public string Path { get; }

    /// <summary>The field separator.</summary>
    public char Separator => _separator;

    /// <summary>The 1-based line where the current record starts.</summary>
    public int Line { get; private set; }

    /// <summary><c>FILE:LINE</c> of the current record, for messages.</summary>
    public string Where => $"{Path}:{Line}";

    /// <summary>The current record's file and first line, for a <see cref="RecordException"/>.</summary>
    internal SourceLocation Location => new(Path, Line);

    /// <summary>The number of fields of the current record.</summary>
    public int FieldCount { get; private set; }

    /// <summary>What is wrong with the current record (it cannot be split into fields), or null when it is well formed.</summary>
    public string? Error { get; private set; }

    /// <summary>Field <paramref name="index"/> of the current record, unquoted and unescaped (valid until the next <see cref="Read"/>).</summary>
    public ReadOnlySpan<char> this[int index]
    {
        get
        {
            if ((uint)index >= (uint)FieldCount) throw new ArgumentOutOfRangeException(nameof(index), index, $"the record has {FieldCount} fields");
            return _rec.AsSpan(_starts[index], _lengths[index]);
        }
    }

    /// <summary>Field <paramref name="index"/> as a new string.</summary>
    public string GetString(int index) => new(this[index]);

    /// <summary>Whether field <paramref name="index"/> was written in quotes (Book-Crossing's unquoted <c>NULL</c>).</summary>
    public bool IsQuoted(int index)
    {
        if ((uint)index >= (uint)FieldCount) throw new ArgumentOutOfRangeException(nameof(index), index, $"the record has {FieldCount} fields");
        return _quoted[index];
    }

    /// <summary>
    /// Moves to the next record; false at the end of the file. When the record is malformed, <see cref="Error"/> says
    /// why (and <see cref="FieldCount"/> is 0).
    /// </summary>
    public bool Read()
    {
        ReadOnlySpan<char> line;
        do
        {
            if (++_reads % DatasetReader.CancelCheckLines == 0) DatasetReader.Cancellation.ThrowIfCancellationRequested();
            if (!NextLine(out line)) return false;
        }
        while (line.IsWhiteSpace());

        Line = _lineNumber;
        FieldCount = 0;
        _recLen = 0;
        Error = null;
        if (!line.Contains('"'))
        {
            // fast path (every line of a ratings file): no quotes, so fields are the runs between separators
            int start = _recLen;
            Append(line);
            int p = 0;
            while (true)
            {
                int k = line[p..].IndexOf(_separator);
                if (k < 0) { AddField(start + p, line.Length - p, quoted: false); return true; }
                AddField(start + p, k, quoted: false);
                p += k + 1;
            }
        }

        _spanField = 0;
        int i = 0;
        while (true)
        {
            // at the start of a field
            if (i < line.Length && line[i] == '"')
            {
                int start = _recLen;
                i++;
                while (true)
                {
                    int q = _quoting == CsvQuoting.Backslash ? IndexOfQuoteBackslash(line, i) : IndexOfQuote(line, i);
                    if (q < 0 && _quoting == CsvQuoting.Backslash && !_multiline && line.Length - i >= 2 && line[^1] == '"')
                        q = line.Length - 1; // "...\" at the end of the line: the quote closes the field, the backslash is text
                    if (q < 0)
                    {
                        Append(line[i..]);
                        if (!_multiline) return Fail($"unterminated quoted field {FieldCount + 1} (no closing '\"' on this line)");
                        if (_spanField == 0) _spanField = FieldCount + 1;
                        if (_lineNumber - Line + 1 >= MaxRecordLines)
                            return Fail($"no closing quote within {MaxRecordLines} lines", unterminated: true);
                        if (!NextLine(out line)) return Fail("the file ends inside it", unterminated: true);
                        Append("\n");
                        i = 0;
                        continue;
                    }
                    Append(line[i..q]);
                    i = q + 1;
                    if (_quoting == CsvQuoting.Rfc4180)
                    {
                        if (i < line.Length && line[i] == '"') { Append("\""); i++; continue; } // "" is one quote
                        if (i < line.Length && line[i] != _separator)
                            return Fail($"field {FieldCount + 1}: '{line[i]}' after the closing quote (expected '{_separator}' or the end of the line)");
                    }
                    else if (i < line.Length && line[i] != _separator)
                    {
                        Append("\""); // a quote not followed by the separator is text (Book-Crossing)
                        continue;
                    }
                    break;
                }
                AddField(start, _recLen - start, quoted: true);
            }
            else
            {
                var rest = line[i..];
                int sep = rest.IndexOf(_separator);
                var field = sep < 0 ? rest : rest[..sep];
                if (_quoting == CsvQuoting.Rfc4180 && field.Contains('"'))
                    return Fail($"field {FieldCount + 1}: a quote inside an unquoted field");
                int start = _recLen;
                Append(field);
                AddField(start, field.Length, quoted: false);
                i += field.Length;
            }
            if (i >= line.Length) return true; // end of record
            i++; // the separator
            if (i == line.Length) { AddField(_recLen, 0, quoted: false); return true; } // trailing empty field
        }
    }

    /// <summary>The 1-based field whose quote was carried over a line break in the current record, or 0.</summary>
    private int _spanField;

    /// <summary>Marks the current record malformed. <paramref name="unterminated"/>: the message says how a quote carried
    /// over line breaks never closed (otherwise it describes what broke).</summary>
    private bool Fail(string message, bool unterminated = false)
    {
        FieldCount = 0;
        if (_spanField == 0) { Error = message; return true; }
        // the record was read across lines: report it at its first line and read the later lines again as records
        Error = unterminated
            ? $"unterminated quoted field {_spanField}: {message}"
            : $"unterminated quoted field {_spanField} (read across lines it breaks at line {_lineNumber}: {message})";
        Rewind(Line);
        return true;
    }

    private StreamReader Open() => new(Path, _encoding, detectEncodingFromByteOrderMarks: false, bufferSize: 1 << 16);

    /// <summary>Reopens the file and skips to just after line <paramref name="line"/> (only after a malformed multi-line record).</summary>
    private void Rewind(int line)
    {
        _reader.Dispose();
        _reader = Open();
        _pos = _end = 0;
        _eof = false;
        _first = true;
        _lineNumber = 0;
        while (_lineNumber < line && NextLine(out _)) { }
    }

    /// <summary>The index of the first quote at or after <paramref name="from"/>, or -1.</summary>
    private static int IndexOfQuote(ReadOnlySpan<char> line, int from)
    {
        int k = line[from..].IndexOf('"');
        return k < 0 ? -1 : from + k;
    }

    /// <summary>The index of the first quote at or after <paramref name="from"/> that is not preceded by a backslash, or -1.</summary>
    private static int IndexOfQuoteBackslash(ReadOnlySpan<char> line, int from)
    {
        while (true)
        {
            int k = line[from..].IndexOf('"');
            if (k < 0) return -1;
            int q = from + k;
            if (q == 0 || line[q - 1] != '\\') return q;
            from = q + 1;
        }
    }

    private void Append(ReadOnlySpan<char> text)
    {
        if (_recLen + text.Length > _rec.Length) Array.Resize(ref _rec, Math.Max(_rec.Length * 2, _recLen + text.Length));
        text.CopyTo(_rec.AsSpan(_recLen));
        _recLen += text.Length;
    }

    private void AddField(int start, int length, bool quoted)
    {
        if (FieldCount == _starts.Length)
        {
            Array.Resize(ref _starts, _starts.Length * 2);
            Array.Resize(ref _lengths, _lengths.Length * 2);
            Array.Resize(ref _quoted, _quoted.Length * 2);
        }
        _starts[FieldCount] = start;
        _lengths[FieldCount] = length;
        _quoted[FieldCount] = quoted;
        FieldCount++;
    }

    /// <summary>The next physical line without its line break (valid until the next call), or false at the end.</summary>
    private bool NextLine(out ReadOnlySpan<char> line)
    {
        int searched = 0;
        while (true)
        {
            int k = _buf.AsSpan(_pos + searched, _end - _pos - searched).IndexOf('\n');
            if (k >= 0)
            {
                int len = searched + k;
                line = Trim(_buf.AsSpan(_pos, len));
                _pos += len + 1;
                _lineNumber++;
                return true;
            }
            searched = _end - _pos;
            if (_eof)
            {
                if (_pos == _end) { line = default; return false; }
                line = Trim(_buf.AsSpan(_pos, _end - _pos));
                _pos = _end;
                _lineNumber++;
                return true;
            }
            if (_pos > 0)
            {
                Array.Copy(_buf, _pos, _buf, 0, _end - _pos);
                _end -= _pos;
                _pos = 0;
            }
            // The same cap as the library's LineReader, in characters: an endless line (a file that is /dev/zero) fails fast.
            if (_end - _pos > LineReader.DefaultMaxLineBytes)
                throw new RecordException(Path, _lineNumber + 1,
                    $"the line is longer than {LineReader.DefaultMaxLineBytes >> 20} Mi characters, the limit on one line (is this the right file?)");
            if (_end == _buf.Length) Array.Resize(ref _buf, _buf.Length * 2);
            int n = _reader.Read(_buf, _end, _buf.Length - _end);
            if (n == 0) _eof = true;
            else _end += n;
        }
    }

    private ReadOnlySpan<char> Trim(ReadOnlySpan<char> line)
    {
        if (line.Length > 0 && line[^1] == '\r') line = line[..^1];
        if (_first)
        {
            _first = false;
            if (line.Length > 0 && line[0] == '\uFEFF') line = line[1..];
        }
        return line;
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _reader.Dispose();
}
