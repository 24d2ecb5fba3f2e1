package dev.mobilesd.random;

/**
 * A stream of standard-normal float32 samples. One stream serves a whole generation: the initial latent,
 * then (LCM) each step's fresh noise, in that order, as diffusers draws them from one torch generator.
 */
public interface RandomSource {
    /** The next {@code count} samples, as {@code torch.randn} of a tensor with that many elements draws them. */
    float[] normalArray(int count);
}
