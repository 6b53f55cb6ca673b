namespace Rellax.Kernels;

/// <summary>
/// A backend's backward kernels: receives only arguments <see cref="BackwardOps"/> has already checked (f32, contiguous,
/// owned by the backend, shapes consistent). Split over partial files like the front.
/// </summary>
internal partial interface IBackwardKernels
{
}
