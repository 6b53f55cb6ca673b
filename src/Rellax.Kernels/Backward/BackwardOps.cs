namespace Rellax.Kernels;

/// <summary>
/// The backward (gradient) ops of the training core, on one backend: for each forward op a model trains through, the
/// gradients of a scalar loss with respect to its inputs (dX) and, where the op has trainable parameters, to those
/// (dW, db). Every method checks its arguments (dtype, shape, owning backend) and throws <see cref="ArgumentException"/>
/// naming the argument and the shapes before any kernel runs; the ground truth is <see cref="BackwardReference"/>.
/// </summary>
/// <remarks>
/// The family is split over partial files by the models that need it: the CRM (DIN) and adapter-head ops, and the
/// frozen Llama layer's dX-only ops. Gradient outputs are overwritten unless a method says it accumulates.
/// </remarks>
public sealed partial class BackwardOps
{
    private readonly ComputeBackend _backend;

    internal BackwardOps(ComputeBackend backend) => _backend = backend;

    private IBackwardKernels K => _backend.BackwardKernels;
}
