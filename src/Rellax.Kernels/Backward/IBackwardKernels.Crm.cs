namespace Rellax.Kernels;

// The CRM (DIN) and adapter-head backward ops; arguments already checked by BackwardOps.Crm.cs.
internal partial interface IBackwardKernels
{
    void LinearBackward(Tensor x, Tensor w, Tensor dy, Tensor? dx, Tensor? dw, Tensor? db);
    void ReluBackward(Tensor y, Tensor dy, Tensor dx);
    void GeluBackward(Tensor x, Tensor dy, Tensor dx);
    void LayerNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx, Tensor dweight, Tensor dbias);
    void EmbeddingBackward(Tensor rows, Tensor dy, Tensor dtable);
    void TargetInteractionBackward(Tensor target, Tensor hist, Tensor starts, Tensor dz, Tensor dtarget, Tensor dhist);
    void WeightedSumBackward(Tensor scores, Tensor hist, Tensor starts, Tensor du, Tensor dscores, Tensor dhist);
    double SigmoidBce(Tensor logits, Tensor labels, float scale, Tensor dlogits);
}
