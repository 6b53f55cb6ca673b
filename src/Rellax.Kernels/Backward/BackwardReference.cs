namespace Rellax.Kernels;

/// <summary>
/// Plain double-precision loops for every op of <see cref="BackwardOps"/>: the ground truth the backends are tested
/// against (and which is itself checked against TorchSharp autograd). Never on a hot path.
/// </summary>
public static partial class BackwardReference
{
}
