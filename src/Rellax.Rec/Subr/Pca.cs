namespace Rellax.Rec;

/// <summary>PCA placeholder (the randomized-SVD fit lands with issue 4).</summary>
public sealed class Pca
{
}
