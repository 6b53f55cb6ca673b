using System.Globalization;

namespace Rellax.Runtime;

/// <summary>
/// One bad record of an input: a line of a file (<see cref="File"/> and <see cref="Line"/>), or an element of a list
/// passed to an API (<see cref="RecordKind"/> and <see cref="Record"/>, e.g. request 3 of a scoring batch), and
/// <see cref="Reason"/>, what is wrong with it, in one sentence. Every line reader of the library and the scorer throw
/// it, so a caller can re-locate an API-level error (<c>request 3</c>) to the line it came from without parsing a
/// message (<see cref="At"/>).
/// </summary>
/// <remarks>
/// <para>It derives from <see cref="FormatException"/> (the input is in the wrong form) because
/// <see cref="InvalidDataException"/>, the type these errors had before, is sealed.</para>
/// <see cref="Exception.Message"/> is one line: <c>FILE:LINE: reason</c> when the file and line are known, <c>FILE: reason</c>
/// for a file-level problem, <c>KIND 'ID': reason</c> or <c>KIND INDEX: reason</c> for an element of a list.
/// </remarks>
public sealed class RecordException : FormatException
{
    /// <summary>A bad line of a file, or a bad file as a whole when <paramref name="line"/> is null.</summary>
    /// <param name="file">The file as the user named it.</param>
    /// <param name="line">1-based line number, or null for the file as a whole.</param>
    /// <param name="reason">What is wrong, one sentence without a trailing period.</param>
    /// <param name="inner">The underlying error, if any.</param>
    public RecordException(string file, long? line, string reason, Exception? inner = null)
        : base(Compose(file, line, null, null, null, reason), inner)
    {
        ArgumentNullException.ThrowIfNull(file);
        File = file;
        Line = line;
        Reason = reason;
    }

    /// <summary>A bad element of a list passed to an API.</summary>
    /// <param name="recordKind">What the elements are, e.g. <c>request</c>, <c>item</c>, <c>sample</c>.</param>
    /// <param name="record">The element's 0-based index in the list.</param>
    /// <param name="recordId">The element's own id when it has one (used in the message instead of the index), else null.</param>
    /// <param name="reason">What is wrong, one sentence without a trailing period.</param>
    /// <param name="inner">The underlying error, if any.</param>
    public RecordException(string recordKind, int record, string? recordId, string reason, Exception? inner = null)
        : base(Compose(null, null, recordKind, record, recordId, reason), inner)
    {
        ArgumentNullException.ThrowIfNull(recordKind);
        RecordKind = recordKind;
        Record = record;
        RecordId = recordId;
        Reason = reason;
    }

    /// <summary>The file, when the record is a line of one.</summary>
    public string? File { get; }

    /// <summary>The 1-based line number in <see cref="File"/>, when known.</summary>
    public long? Line { get; }

    /// <summary>What the records are (<c>request</c>, <c>item</c>, <c>sample</c>) when the record is an element of a list.</summary>
    public string? RecordKind { get; }

    /// <summary>The element's 0-based index in the list the API received, when the record is one.</summary>
    public int? Record { get; }

    /// <summary>The element's own id (e.g. a sample id), when it has one.</summary>
    public string? RecordId { get; }

    /// <summary>What is wrong, without the location.</summary>
    public string Reason { get; }

    /// <summary>
    /// The same error located at <paramref name="file"/>:<paramref name="line"/>, e.g. once the caller has mapped request
    /// <see cref="Record"/> to the line it read it from; <paramref name="label"/> (e.g. <c>id 17</c>) goes before the reason.
    /// </summary>
    public RecordException At(string file, long line, string? label = null) =>
        new(file, line, label is null ? Reason : $"{label}: {Reason}", this);

    private static string Compose(string? file, long? line, string? kind, int? record, string? id, string reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        if (file is not null)
            return line is long l ? string.Create(CultureInfo.InvariantCulture, $"{file}:{l}: {reason}") : $"{file}: {reason}";
        return id is not null ? $"{kind} '{id}': {reason}" : string.Create(CultureInfo.InvariantCulture, $"{kind} {record}: {reason}");
    }
}
