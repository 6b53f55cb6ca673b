namespace Rellax.Rec;

// PLACEHOLDER: the Book-Crossing and goodbooks-10k readers (data helper).
internal static class BookReaders
{
    public static RatingDataset ReadBookCrossing(string directory, DatasetReadOptions options) => throw new NotImplementedException("PLACEHOLDER: Book-Crossing reader");

    public static RatingDataset ReadGoodReads(string directory, DatasetReadOptions options) => throw new NotImplementedException("PLACEHOLDER: goodbooks-10k reader");
}
