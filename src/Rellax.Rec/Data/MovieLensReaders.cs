namespace Rellax.Rec;

// PLACEHOLDER: the ML-1M and ML-25M readers (data helper).
internal static class MovieLensReaders
{
    public static RatingDataset Read1M(string directory, DatasetReadOptions options) => throw new NotImplementedException("PLACEHOLDER: MovieLens-1M reader");

    public static RatingDataset Read25M(string directory, DatasetReadOptions options) => throw new NotImplementedException("PLACEHOLDER: MovieLens-25M reader");
}
